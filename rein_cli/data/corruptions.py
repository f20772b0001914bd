"""The 15 common corruptions of Hendrycks & Dietterich (ImageNet-C), as the `imagecorruptions` package (1.1.2) applies
them to images of any size: the protocol of Cityscapes-C and of Rein's robustness figure.

Our own implementation of the same formulas, constants and operations (docs/evaluation.md, "Corruption
robustness"): the library itself needs the GUI build of OpenCV and a scikit-image argument that no longer exists.
Each function takes an (H, W, 3) uint8 RGB array and a ``numpy.random.RandomState`` and returns an (H, W, 3) uint8
array; every random draw comes from that generator, in the library's order, so that the library run after
``np.random.seed(k)`` and ours given ``RandomState(k)`` draw the same numbers (benchmarks/corruption_reference.py,
tests/test_corruptions.py). `corrupt` seeds the generator from the image's identity, the corruption and the
severity (`corruption_seed`). OpenCV (``pip install 'rein-cli[corruptions]'``) is needed by the blur, snow and frost
corruptions; frost's six overlay images are downloaded once into ``$REIN_HOME/corruptions/frost`` (`frost_images`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rein_cli.config import rein_home
from rein_cli.data import corruption_formulas as formulas
from rein_cli.errors import ReinError
from rein_cli.fetch import fetch
from rein_cli.hub import offline
from rein_cli.io import read_image, save_image

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
SLOW = ("glass_blur", "zoom_blur", "elastic_transform")  # cached under $REIN_HOME/corruptions/cache by `corrupt_file`
NEED_OPENCV = {"defocus_blur", "snow", "frost"}
VERSION = 1  # part of every seed and cache key: bump when an output changes
_FORMULAS = {name: getattr(formulas, name) for name in CORRUPTIONS}  # each corruption's function, by its name

# The frost overlays of imagecorruptions 1.1.2: its repository at the tag v1.1.2 (the same bytes as in its wheel).
FROST_COMMIT = "d03ee68843a9be8fda4c94a9ad8aad767a3f437e"
FROST_BASE = f"https://raw.githubusercontent.com/bethgelab/imagecorruptions/{FROST_COMMIT}/imagecorruptions/frost"
FROST_FILES = (
    ("frost1.png", 1199930, "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755"),
    ("frost2.png", 299002, "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137"),
    ("frost3.png", 299002, "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504"),
    ("frost4.jpg", 36734, "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e"),
    ("frost5.jpg", 155150, "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2"),
    ("frost6.jpg", 90185, "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25"),
)


# ---------------------------------------------------------------------------------------------------- the spec


def parse_spec(spec: str) -> list[tuple[str, int]]:
    """``all`` (15 x severities 1-5), a name (its 5 severities), ``name:3``, or a comma list of these -> the
    (corruption, severity) pairs in the order given, each once."""
    pairs: list[tuple[str, int]] = []
    parts = [p.strip() for p in str(spec).split(",")]
    if not any(parts):
        raise ReinError(f"--corruption {spec!r} names no corruption; {_valid()}")
    for part in parts:
        if not part:
            continue
        name, _, level = part.partition(":")
        name = name.strip().lower().replace("-", "_")
        names = list(CORRUPTIONS) if name == "all" else [name]
        if name != "all" and name not in CORRUPTIONS:
            raise ReinError(f"unknown corruption {name!r} in --corruption {spec!r}; {_valid()}")
        if level.strip():
            if not level.strip().isdigit() or int(level) not in SEVERITIES:
                raise ReinError(f"unknown severity {level.strip()!r} in --corruption {spec!r}; {_valid()}")
            levels = [int(level)]
        else:
            levels = list(SEVERITIES)
        pairs += [(n, s) for n in names for s in levels if (n, s) not in pairs]
    return pairs


def _valid() -> str:
    return (
        f"valid: all, a name, or name:severity (severities 1-5), comma-separated; the names: {', '.join(CORRUPTIONS)}"
    )


def corruption_seed(identity: str, name: str, severity: int) -> int:
    """The seed of an image's corruption: the first 4 bytes (little-endian) of the SHA-256 of
    ``"rein-corruption-v1\\0<identity>\\0<name>\\0<severity>"``; the identity is the image's path relative to its
    dataset's folder (the same wherever the dataset lies)."""
    text = f"rein-corruption-v{VERSION}\0{identity}\0{name}\0{int(severity)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def corrupt(
    image: np.ndarray,
    name: str,
    severity: int,
    *,
    identity: str | None = None,
    rng: np.random.RandomState | None = None,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB, corrupted by ``name`` at ``severity`` (1-5); the same shape and dtype.
    The random draws come from ``rng``, else from ``RandomState(corruption_seed(identity, name, severity))``."""
    if name not in CORRUPTIONS:
        raise ReinError(f"unknown corruption {name!r}; {_valid()}")
    if severity not in SEVERITIES:
        raise ReinError(f"unknown severity {severity!r} of {name}; {_valid()}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ReinError(f"corruptions take (H, W, 3) uint8 images, not {image.dtype} {tuple(image.shape)}")
    if rng is None:
        if identity is None:
            raise ReinError("corrupt() needs the image's identity (for its seed) or a random generator")
        rng = np.random.RandomState(corruption_seed(identity, name, severity))
    extra = {"overlays": frost_images()} if name == "frost" else {}  # frost blends in one of its downloaded images
    out = _FORMULAS[name](image, severity, rng, **extra)
    return np.asarray(out).astype(np.uint8)  # floats truncated, as the library's np.uint8(...)


def corrupt_file(
    image: np.ndarray, name: str, severity: int, *, identity: str, source: Path, cache: Path | None = None
) -> np.ndarray:
    """`corrupt` with the slow corruptions (`SLOW`) cached as PNGs under ``cache`` (default
    ``$REIN_HOME/corruptions/cache``), keyed by the source file (resolved path, size, modification time), the
    identity, the corruption, the severity and `VERSION`; an unreadable or unwritable cache only costs the time."""
    if name not in SLOW:
        return corrupt(image, name, severity, identity=identity)
    try:
        stat = Path(source).stat()
        key = (
            f"{os.path.realpath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{identity}\0{name}\0{severity}\0{VERSION}"
        )
    except OSError:
        return corrupt(image, name, severity, identity=identity)
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = Path(cache if cache is not None else rein_home() / "corruptions" / "cache") / name / f"{digest}.png"
    if path.is_file():
        try:
            array = np.array(read_image(path))  # writable, as a computed one
            if array.shape == image.shape:
                return array
        except ReinError:
            pass  # a damaged or incomplete entry: computed and written again
    out = corrupt(image, name, severity, identity=identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, out, compress_level=1)
    except (OSError, ReinError):
        pass
    return out


def prepare(pairs: Sequence[tuple[str, int]], *, progress: bool = False) -> None:
    """What ``pairs`` need, before any image is read: OpenCV for the blur, snow and frost corruptions, and frost's
    overlays downloaded (call it in one process first when several share ``$REIN_HOME``)."""
    names = {name for name, _ in pairs}
    if names & NEED_OPENCV:
        formulas.opencv()
    if "frost" in names:
        frost_images(progress=progress)


# ---------------------------------------------------------------------------------------------------- frost files


_checked: dict[tuple, list[Path]] = {}  # the overlays checked in this process


def frost_images(
    folder: Path | None = None,
    *,
    base_url: str | None = None,
    files: Sequence[tuple[str, int, str]] = FROST_FILES,
    progress: bool = False,
) -> list[Path]:
    """The six frost overlays, downloaded once into ``folder`` (default ``$REIN_HOME/corruptions/frost``) from
    imagecorruptions' repository at a pinned commit (``base_url``, else ``$REIN_FROST_URL``: another place with the
    same files), each checked against its size and SHA-256 (``files``: name, size, SHA-256); files already there
    are only checked, once per process. A mismatch is an error and nothing unchecked is kept."""
    folder = Path(folder) if folder is not None else rein_home() / "corruptions" / "frost"
    base = (base_url or os.environ.get("REIN_FROST_URL") or FROST_BASE).rstrip("/")
    key = (str(folder), tuple(files))
    if key not in _checked:
        missing = [name for name, _, _ in files if not (folder / name).is_file()]
        if missing and offline() and not _local(base):  # offline: no attempt, and what to do instead
            raise ReinError(
                f"the frost corruption needs imagecorruptions' six frost images in {folder}, and {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not there; offline (--offline, HF_HUB_OFFLINE=1) nothing is "
                f"downloaded: {_frost_remedy(folder)}"
            )
        try:
            _checked[key] = [
                fetch(f"{base}/{name}", folder / name, size=size, sha256=sha256, progress=progress).path
                for name, size, sha256 in files
            ]
        except ReinError as err:
            raise ReinError(f"{err}; or else {_frost_remedy(folder, online=False)}") from err
    return _checked[key]


def _local(url: str) -> bool:
    """A place on this machine: a ``file:`` URL, or a server on the loopback address (a local mirror)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "file" or (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")


def _frost_remedy(folder: Path, online: bool = True) -> str:
    """The ways to give frost its images: a connection (``online``), the files copied by hand, or another place to
    take them from."""
    ways = [
        f"copy those files (imagecorruptions 1.1.2's folder imagecorruptions/frost) into {folder}",
        "set REIN_FROST_URL to a place that has them (a mirror, or file:///a/folder)",
    ]
    if online:
        ways.insert(0, f"run it once online, without --offline or HF_HUB_OFFLINE (they come from {FROST_BASE})")
    return ", or ".join(ways)
