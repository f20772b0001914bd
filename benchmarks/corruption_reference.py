"""Golden values of the imagecorruptions library (1.1.2) for tests/test_corruptions.py.

NEEDS A SCRATCH ENVIRONMENT with the library, which cannot be a dependency of rein (it needs GUI OpenCV):

    python3 -m venv /tmp/icvenv
    /tmp/icvenv/bin/pip install numpy scipy pillow scikit-image opencv-python-headless
    /tmp/icvenv/bin/pip install --no-deps imagecorruptions==1.1.2
    /tmp/icvenv/bin/python benchmarks/corruption_reference.py > tests/data/corruption_golden.json
    PYTHONPATH=. /tmp/icvenv/bin/python benchmarks/corruption_reference.py --compare   # ours against it

Use the versions of numpy, scipy, Pillow and OpenCV that the tests run with. The library is run on a generated
72 x 120 image (`reference_image`) with ``np.random.seed(seed)`` before each call (it draws from numpy's global
generator); ours gets ``np.random.RandomState(seed)``, the same stream. Frost reads generated overlays
(`frost_overlays`) instead of its own files. Patches that let the 2020 library run on today's packages, none
changing a formula: scikit-image's ``gaussian(multichannel=True)`` is ``channel_axis=-1``; ``np.float_`` is
``np.float64``; scikit-image's ``random_noise`` (impulse noise) draws from numpy's global generator (it uses a
fresh unseeded one since 0.19). Prints ``{"shape": ..., "values": {"name-severity": {"seed", "sha256",
"pooled", "spread"}}}``: the SHA-256 of the uint8 output, and the mean and the standard deviation of each cell of
an 8 x 8 grid (`summary`). The tests compare the two statistics within a tolerance, so that another build of numpy,
libm or OpenCV, whose last-bit rounding moves a few values by one grey level, passes, and a wrong formula fails.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

SHAPE = (72, 120)
NAMES = (
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
FROST_SIZES = ((60, 90), (100, 80), (50, 140), (90, 160), (40, 40), (80, 130))  # (H, W) of frost1..6


def reference_image(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A street-like test image: gradients, blocks and some noise, (H, W, 3) uint8."""
    h, w = shape
    rng = np.random.RandomState(20240601)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], axis=-1)
    image[h // 3 : h // 2, w // 4 : w // 2] = (200, 40, 40)
    image[h // 2 :, (2 * w) // 3 :] = (30, 160, 220)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def frost_overlays(folder: Path) -> list[Path]:
    """Six generated frost-like PNGs (frost1.png ... frost6.png, RGBA like the library's first three) in ``folder``."""
    from PIL import Image

    rng = np.random.RandomState(7)
    paths = []
    for k, (h, w) in enumerate(FROST_SIZES, 1):
        image = rng.randint(0, 256, (h, w, 4)).astype(np.uint8)
        image[..., 3] = 255
        path = Path(folder) / f"frost{k}.png"
        Image.fromarray(image, "RGBA").save(path)
        paths.append(path)
    return paths


def seed_of(name: str, severity: int) -> int:
    return 1000 + 10 * NAMES.index(name) + severity


def summary(out: np.ndarray) -> dict:
    """The output's SHA-256, and over an 8 x 8 grid of cells the mean (``pooled``) and the standard deviation
    (``spread``) of each cell's values, its three channels together."""
    h, w = out.shape[:2]
    cells = out[: h - h % 8, : w - w % 8].astype(np.float64).reshape(8, h // 8, 8, w // 8, 3)
    return {
        "sha256": hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest(),
        "pooled": np.round(cells.mean(axis=(1, 3, 4)), 3).ravel().tolist(),
        "spread": np.round(cells.std(axis=(1, 3, 4)), 3).ravel().tolist(),
    }


def _library(folder: Path):
    """imagecorruptions' ``corrupt``, patched to run on today's packages (module docstring)."""
    import skimage.filters
    import skimage.util

    gaussian, random_noise = skimage.filters.gaussian, skimage.util.random_noise

    def gaussian_multichannel(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(image, *args, **kwargs)

    def random_noise_global(image, *args, **kwargs):
        kwargs.setdefault("rng", np.random.Generator(np.random.mtrand._rand._bit_generator))
        return random_noise(image, *args, **kwargs)

    skimage.filters.gaussian = gaussian_multichannel
    skimage.util.random_noise = random_noise_global
    np.float_ = np.float64
    import imagecorruptions
    import imagecorruptions.corruptions as corruptions

    overlays = {p.name: str(p) for p in frost_overlays(folder)}
    corruptions.gaussian = gaussian_multichannel
    corruptions.resource_filename = lambda _, name: overlays.get(Path(name).stem + ".png", name)
    return imagecorruptions.corrupt


def main() -> None:
    image = reference_image()
    with tempfile.TemporaryDirectory() as folder:
        corrupt = _library(Path(folder))
        if "--compare" in sys.argv:
            return compare(corrupt, image, Path(folder))
        values = {}
        for name in NAMES:
            for severity in range(1, 6):
                np.random.seed(seed_of(name, severity))
                out = corrupt(image, severity=severity, corruption_name=name)
                values[f"{name}-{severity}"] = {"seed": seed_of(name, severity), **summary(out)}
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in values.items()]
    head = f'{{"shape": {list(SHAPE)}, "library": "imagecorruptions 1.1.2", "values": {{'
    print(head + "\n" + ",\n".join(lines) + "\n}}")


def compare(corrupt, image: np.ndarray, folder: Path) -> None:
    """Ours against the library, per corruption: bit-identical or the largest absolute difference."""
    from rein_cli.data import corruption_formulas as formulas
    from rein_cli.data import corruptions as ours

    overlays = sorted(folder.glob("frost*.png"))
    for name in NAMES:
        worst = 0
        for severity in range(1, 6):
            np.random.seed(seed_of(name, severity))
            theirs = corrupt(image, severity=severity, corruption_name=name)
            rng = np.random.RandomState(seed_of(name, severity))
            if name == "frost":
                mine = formulas.frost(image, severity, rng, overlays=overlays).astype(np.uint8)
            else:
                mine = ours.corrupt(image, name, severity, rng=rng)
            worst = max(worst, int(np.abs(theirs.astype(int) - mine.astype(int)).max()))
        print(f"{name:18s} {'bit-identical' if worst == 0 else f'max abs difference {worst}'} (severities 1-5)")


if __name__ == "__main__":
    main()
