"""Reading images and labels with clear errors, and writing files atomically (temp file, then rename)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from rein_cli.errors import ReinError
from rein_cli.parallel import track_temporary, untrack_temporary

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on failure removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReinError(f"cannot write {path}: {err.strerror}; choose a writable location") from err
    tmp = _temporary(path)
    try:
        while True:
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
                break
            except FileExistsError:  # another write's file: left alone, another name taken
                untrack_temporary(tmp)
                tmp = _temporary(path)
            except OSError as err:
                raise ReinError(f"cannot write {path}: {err.strerror}; choose a writable location") from err
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:  # a failed write of an open file names none: name the final path
            err.filename = str(path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
        untrack_temporary(tmp)


def _temporary(path: Path) -> Path:
    """A new temporary name beside ``path`` (``.NAME.*.tmp``), tracked before the file exists: a worker process
    ended at any moment removes it (`rein_cli.parallel.track_temporary`)."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    track_temporary(tmp)
    return tmp


def check_folder(folder: Path, option: str = "--out") -> None:
    """An error when ``folder``, an output folder given as ``option``, is a file or lies under one."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "is a file" if path == folder else f"lies in {path}, which is a file"
                raise ReinError(f"{option} {folder} {where}, not a folder; choose a folder")
            return


def check_writable(folder: Path, option: str = "--out") -> None:
    """Fail now, not after hours of work, when ``folder`` is a file or cannot be created or written to. Leaves
    nothing behind: the folders made for the check are removed (the work makes them when it writes)."""
    folder = Path(folder)
    check_folder(folder, option)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rein-write-test-"):
            pass
    except OSError as err:
        raise ReinError(f"cannot write to {folder}: {err.strerror}; choose a writable {option}") from err
    finally:
        for path in made:  # the deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_image(
    path: Path, array: np.ndarray, *, palette: np.ndarray | None = None, compress_level: int = 6, quality: int = 95
) -> None:
    """Save an (H, W, 3) RGB or (H, W) uint8 array; a (K, 3) ``palette`` makes a palette PNG from an index map.
    ``quality``: a JPEG's; ``compress_level``: a PNG's."""
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P")
        image.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    options = {"quality": quality} if fmt == "JPEG" else {"compress_level": compress_level}
    with atomic_path(path) as tmp:
        try:
            image.save(tmp, format=fmt, **options)
        except OSError as err:
            if err.errno is not None:  # a full disk, a permission: the error boundary explains it, naming the file
                raise
            raise ReinError(f"cannot write {path}: {err}; choose another place or format") from err


# What each reader does with each Pillow mode (the mode is known from the header, before any decoding).
# Images: RGB as is; RGBA, LA, PA and RGBa drop their alpha (as OpenCV's colour read in the official pipeline
# does: no compositing onto a background that would change the pixels); L and 1 repeat their grey in the three
# channels; P and PA give their palette colours; YCbCr is converted by the JPEG formula; 16-bit greyscale (I;16...)
# keeps its high byte, as OpenCV does (Pillow's own conversion would clip everything above 255 to white).
# CMYK (needs its colour profile), 32-bit integer (I) and float (F) images are refused: no conversion is right
# for all of them. Labels: L, P (the palette index, never the colour) and 1 (0/1) are class ids; 16-bit labels
# (I;16, or 16-bit colour PNGs whose first channel holds the id) only where the label format is 16-bit.
IMAGE_MODES = ("RGB", "RGBA", "RGBa", "L", "LA", "1", "P", "PA", "YCbCr")
LABEL_MODES = ("L", "P", "1")
FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP")  # MPO: a JPEG with extra pictures (many phones)
DEFAULT_MAX_PIXELS = 100_000_000
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_LOW_BIT_GREY = {"L;2": 85, "L;4": 17}  # Pillow scales 2- and 4-bit greyscale to 0-255: divide back to the values
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error)


def max_pixels() -> int:
    """The most pixels (width x height) an image may declare: ``$REIN_MAX_PIXELS`` (read at each call), else 100 M."""
    text = os.environ.get("REIN_MAX_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = 0.0
    if not value.is_integer() or value < 1:
        raise ReinError(f"REIN_MAX_PIXELS={text!r} must be a positive whole number of pixels, e.g. 200000000")
    return int(value)


def _formats() -> list[str]:
    Image.init()  # loads the plugins once; a format this Pillow lacks (WebP) is left out
    return [f for f in FORMATS if f in Image.OPEN]


def _open_past_pillow_ceiling(path: Path) -> Image.Image:
    """The header of an image that Pillow's own open refuses (over twice its global ``MAX_IMAGE_PIXELS``), read by
    the format's plugin, so that REIN_MAX_PIXELS alone decides without changing Pillow's global setting."""
    data = path.read_bytes()
    for name in _formats():
        factory, accept = Image.OPEN[name]
        if accept is not None and accept(data[:16]) is not True:
            continue
        try:
            return factory(io.BytesIO(data), str(path))
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError(f"cannot identify image file {path}")


def _open(path: Path, what: str) -> Image.Image:
    """``path`` with its header read and nothing decoded, after the checks every read shares: the file exists, is
    not empty, is a PNG, JPEG, BMP, TIFF or WebP, and declares at most `max_pixels` pixels."""
    path = Path(path)
    if not path.is_file():
        raise ReinError(f"{what} not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise ReinError(f"cannot read {what} {path}: the file is empty (0 bytes); replace or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is the one that counts
            try:
                image = Image.open(path, formats=_formats())
            except Image.DecompressionBombError:
                image = _open_past_pillow_ceiling(path)
    except UnidentifiedImageError:
        kind = "not a PNG, JPEG, BMP, TIFF or WebP image"
        raise ReinError(f"cannot read {what} {path}: {kind}; replace or remove it") from None
    except _DECODE_ERRORS as err:
        raise ReinError(f"cannot read {what} {path}: {err}; replace or remove the file") from None
    width, height = image.size
    limit = max_pixels()
    if width * height > limit:
        image.close()
        raise ReinError(
            f"{what} {path} declares {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the limit "
            f"of {limit / 1e6:g} megapixels (a decompression bomb?); if it is genuine, set "
            f"REIN_MAX_PIXELS={width * height}"
        )
    return image


def _decode(image: Image.Image, path: Path, what: str) -> None:
    """Decode every pixel; truncated, incomplete or damaged data is an error naming the file. Pillow's
    ``LOAD_TRUNCATED_IMAGES`` (which would fill what is missing with grey) is refused, whoever set it."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ReinError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on (set by a library or script in this process), which would read "
            "cut-off images as complete; set it back to False"
        )
    try:
        if image.format == "PNG":
            _load_png(image, path, what)
        else:
            image.load()
    except _DECODE_ERRORS as err:
        if str(err).startswith("image file is truncated"):  # Pillow's words for data that stops early
            raise ReinError(
                f"cannot decode {what} {path}: the {image.format} data ends early (the file was cut short, as an "
                "interrupted copy or download leaves it); replace it with a complete copy"
            ) from None
        raise ReinError(f"cannot decode {what} {path} ({err}); the file is damaged or truncated: replace it") from None


def _load_png(image: Image.Image, path: Path, what: str) -> None:
    """Decode a PNG, refusing one whose zlib stream ends (complete and valid) before the last row: Pillow reads that
    without an error and leaves the missing rows as they were. So the last row is first filled with a pattern no
    image would hold; only when it is still there after decoding are the rows counted (`png_rows`, which inflates
    the stream once more). Should Pillow ever decode into memory of its own, an all-zero last row is the sign. An
    interlaced PNG (rare; its last pass leaves the last row alone when the height is odd) is always counted."""
    if image.info.get("interlace"):
        image.load()
        _check_png_rows(path, what)
        return
    width, height = image.size
    blank = Image.new(image.mode, (width, 1)).tobytes()
    row = Image.frombytes(image.mode, (width, 1), (np.arange(len(blank)) * 151 + 89).astype(np.uint8).tobytes())
    pattern = row.tobytes()  # as the mode keeps it (a 1-bit row's padding bits dropped)
    memory = Image.core.new(image.mode, image.size)
    memory.paste(row.im, (0, height - 1, width, height))
    image.im = memory
    image.load()
    last = image.crop((0, height - 1, width, height)).tobytes()
    if last == (pattern if image.im is memory else blank):
        _check_png_rows(path, what)


def _check_png_rows(path: Path, what: str) -> None:
    try:
        rows, declared, passes = png_rows(path)
    except (OSError, ValueError, struct.error, zlib.error) as err:
        raise ReinError(f"cannot decode {what} {path} ({err}); the file is damaged or truncated: replace it") from None
    if rows < declared:
        interlaced = f" of its {passes} interlaced passes" if passes > 1 else ""
        raise ReinError(
            f"{what} {path} is incomplete: its pixel data holds {rows} of {declared} rows{interlaced}; replace it "
            "with a complete copy"
        )


_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows(path: Path) -> tuple[int, int, int]:
    """(rows its IDAT chunks' zlib stream holds in full, rows its header declares, passes) of a PNG file; an
    interlaced PNG counts the rows of its 7 passes (Adam7: x0, y0, dx, dy of each)."""
    data = Path(path).read_bytes()
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_SAMPLES.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in passes]
    rows = [(1 + (w * bits + 7) // 8, h) for w, h in sizes if w > 0 and h > 0]  # (bytes with the filter, rows)
    left = _inflated_size(data, sum(size * n for size, n in rows))
    held = 0
    for size, n in rows:
        held += min(left // size, n)
        left -= min(left // size, n) * size
    return held, sum(n for _, n in rows), len(passes)


def _inflated_size(data: bytes, limit: int) -> int:
    """How many bytes the zlib stream of a PNG's IDAT chunks inflates to, counted up to ``limit``."""
    stream, size, at = zlib.decompressobj(), 0, 8
    while at + 8 <= len(data) and size < limit and not stream.eof:
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IEND":
            break
        chunk = data[at + 8 : at + 8 + length] if kind == b"IDAT" else b""
        while chunk and size < limit and not stream.eof:
            size += len(stream.decompress(chunk, limit - size))
            chunk = stream.unconsumed_tail
        at += 12 + length
    return size


def _raw_mode(image: Image.Image) -> str:
    """How the file stores its pixels (e.g. 'L;4', 'RGB;16B'), known before decoding; '' when not told."""
    args = image.tile[0][3] if image.tile else ""
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else ""


def _is_sixteen_bit_grey(image: Image.Image) -> bool:
    return image.mode in _SIXTEEN_BIT or (image.mode == "I" and _raw_mode(image).startswith("I;16"))


def _check_image_mode(image: Image.Image, path: Path) -> None:
    if image.mode not in IMAGE_MODES and not _is_sixteen_bit_grey(image):
        raise ReinError(
            f"image {path} has mode {image.mode}; expected an 8-bit RGB, greyscale or palette image "
            f"({', '.join(IMAGE_MODES)}) or 16-bit greyscale: convert it to RGB"
        )


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image after every check of `read_image`, the full decode included, without converting
    the pixels (for images that are only checked, such as those `prepare` leaves in place)."""
    path = Path(path)
    with _open(path, "image") as image:
        _check_image_mode(image, path)
        _decode(image, path, "image")
        return image.size


def read_image(path: Path) -> np.ndarray:
    """An image fully decoded as (H, W, 3) uint8 RGB (see `IMAGE_MODES` for what each mode becomes); every
    problem is a `ReinError` naming the file."""
    path = Path(path)
    with _open(path, "image") as image:
        _check_image_mode(image, path)
        _decode(image, path, "image")
        if _is_sixteen_bit_grey(image):
            grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)  # the high byte, as OpenCV reads it
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def read_label(path: Path, *, bits: int = 8) -> np.ndarray:
    """A label map of class ids as (H, W), fully decoded: uint8 from L, P (palette indices) or 1 (0/1) PNGs; with
    ``bits=16`` (a 16-bit label format) also uint16 from 16-bit greyscale, or from the first channel of a 16-bit
    colour PNG (read by OpenCV). Any other mode is a `ReinError` naming the file, its mode and what is expected."""
    path = Path(path)
    with _open(path, "label") as image:
        raw = _raw_mode(image)
        if image.mode in LABEL_MODES:
            _decode(image, path, "label")
            label = np.asarray(image).astype(np.uint8, copy=False)
            return label // _LOW_BIT_GREY[raw] if raw in _LOW_BIT_GREY else label
        if bits == 16 and _is_sixteen_bit_grey(image):
            _decode(image, path, "label")
            return np.asarray(image).astype(np.uint16)
        if bits == 16 and image.mode in ("RGB", "RGBA") and raw.endswith(";16B"):
            return _read_sixteen_bit_colour(path, image.size)
        if image.mode in _SIXTEEN_BIT or image.mode == "I":
            depth = "16-bit" if _is_sixteen_bit_grey(image) else "32-bit"
            raise ReinError(
                f"label {path} has mode {image.mode} ({depth}); labels here are {bits}-bit at most: save it as an "
                "8-bit single-channel (L) or palette (P) PNG of class ids"
            )
        expected = "a single-channel 8-bit (L) or palette (P) PNG of class ids"
        if bits == 16:
            raise ReinError(f"label {path} has mode {image.mode}; expected a 16-bit PNG or {expected}")
        raise ReinError(
            f"label {path} has mode {image.mode}; expected {expected}: convert colours to class ids (a custom "
            "dataset can give each class its colour in classes.yaml)"
        )


def _read_sixteen_bit_colour(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The first (red) channel of a 16-bit colour PNG, where SYNTHIA stores the class id. Pillow keeps only 8 bits
    of each channel, so OpenCV decodes it (after `_open`'s checks of the file and its size)."""
    try:
        import cv2
    except ImportError as err:
        raise ReinError(
            f"label {path} is a 16-bit colour PNG, which needs OpenCV: pip install 'rein-cli[synthia]'"
        ) from err
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # (H, W, 3 or 4) uint16, BGR(A)
    if array is None or array.ndim != 3 or array.shape[1::-1] != size:
        _check_png_rows(path, "label")  # libpng refuses a PNG with rows missing: say how many
        raise ReinError(f"cannot decode label {path}; the file is damaged or truncated: replace it")
    return np.ascontiguousarray(array[:, :, 2])


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted); an error when there are none."""
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ReinError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {directory}; point to a folder of images")
    return files


def relative_path(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` in POSIX form (as manifests store it); absolute across drives."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())
