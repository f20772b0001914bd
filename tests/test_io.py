"""The safe image and label readers: full decode, the pixel limit before decoding, and the rule for every mode."""

import re
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from rein_cli.errors import ReinError
from rein_cli.io import atomic_path, check_image, read_image, read_label

from .helpers import bomb_png, drop_rows, hand_png, png_chunk, truncate

RGB = np.array([[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [255, 255, 255]]], np.uint8)  # (2, 2, 3)


def message(path) -> str:
    """The file's path, as a regular expression."""
    return re.escape(str(path))


# Images: what each mode becomes.


def test_rgb_and_alpha_images(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png"), RGB)
    rgba = np.concatenate([RGB, np.array([[[0], [128]], [[255], [7]]], np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), RGB)  # alpha dropped, colours untouched


def test_greyscale_and_bilevel_images_repeat_their_grey(tmp_path):
    grey = np.array([[0, 90], [180, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("LA").save(tmp_path / "grey_alpha.png")
    for name in ("grey.png", "grey_alpha.png"):
        assert np.array_equal(read_image(tmp_path / name), np.repeat(grey[..., None], 3, axis=2)), name
    Image.fromarray(np.array([[0, 1], [1, 0]], bool)).save(tmp_path / "bits.png")
    assert read_image(tmp_path / "bits.png")[..., 0].tolist() == [[0, 255], [255, 0]]


def test_palette_images_give_their_colours(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8)).convert("P")
    image.putpalette([9, 8, 7, 255, 0, 0, 0, 0, 255])
    image.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").tolist() == [[[9, 8, 7], [255, 0, 0]], [[0, 0, 255], [9, 8, 7]]]


def test_sixteen_bit_greyscale_images_keep_the_high_byte(tmp_path):
    Image.fromarray(np.array([[0, 255], [4660, 65535]], np.uint16)).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
    assert read_image(tmp_path / "deep.png")[..., 1].tolist() == [[0, 0], [18, 255]]  # not clipped to white


@pytest.mark.parametrize("mode", ["CMYK", "F", "I"])
def test_images_of_other_modes_are_refused_naming_file_and_mode(tmp_path, mode):
    path = tmp_path / f"odd.{'jpg' if mode == 'CMYK' else 'tif'}"
    Image.new(mode, (4, 2)).save(path)
    for reader in (read_image, check_image):
        with pytest.raises(ReinError, match=rf"image {message(path)} has mode {mode}; expected an 8-bit RGB"):
            reader(path)


# Labels: class ids, never colours.


def test_labels_read_by_index(tmp_path):
    ids = np.array([[0, 1, 2, 3]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "l.png")
    palette = Image.fromarray(ids).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(tmp_path / "p.png")
    Image.fromarray(ids).save(tmp_path / "four_bits.png", bits=4)  # Pillow alone would give 0, 17, 34, 51
    for name in ("l.png", "p.png", "four_bits.png"):
        label = read_label(tmp_path / name)
        assert label.dtype == np.uint8 and np.array_equal(label, ids), name
    Image.fromarray(np.array([[0, 1, 1, 0]], bool)).save(tmp_path / "one_bit.png")
    assert read_label(tmp_path / "one_bit.png").tolist() == [[0, 1, 1, 0]]


def test_colour_labels_are_refused_naming_file_mode_and_what_is_expected(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "colour.png")
    expected = r"has mode RGB; expected a single-channel 8-bit \(L\) or palette \(P\) PNG of class ids"
    with pytest.raises(ReinError, match=rf"label {message(tmp_path / 'colour.png')} {expected}"):
        read_label(tmp_path / "colour.png")


def test_sixteen_bit_labels_only_where_the_format_is_sixteen_bit(tmp_path):
    ids = np.array([[0, 300], [65535, 22]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "deep.png")
    with pytest.raises(
        ReinError, match=rf"label {message(tmp_path / 'deep.png')} has mode I;16 \(16-bit\); labels here are 8-bit"
    ):
        read_label(tmp_path / "deep.png")
    label = read_label(tmp_path / "deep.png", bits=16)
    assert label.dtype == np.uint16 and np.array_equal(label, ids)


def test_sixteen_bit_colour_labels_give_their_first_channel(tmp_path):
    cv2 = pytest.importorskip("cv2")
    bgr = np.zeros((2, 3, 3), np.uint16)
    bgr[..., 2] = [[1, 2, 3], [22, 300, 0]]  # red, the first channel in the file: the class id
    bgr[..., 1] = 1000  # an instance id
    cv2.imwrite(str(tmp_path / "synthia.png"), bgr)
    assert read_label(tmp_path / "synthia.png", bits=16).tolist() == [[1, 2, 3], [22, 300, 0]]
    with pytest.raises(ReinError, match=rf"label {message(tmp_path / 'synthia.png')} has mode RGB"):
        read_label(tmp_path / "synthia.png")  # an 8-bit label format
    truncate(tmp_path / "synthia.png", 0.6)
    with pytest.raises(ReinError, match=rf"label {message(tmp_path / 'synthia.png')}"):
        read_label(tmp_path / "synthia.png", bits=16)


# Damaged files.


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_empty_missing_and_non_image_files(tmp_path, reader):
    (tmp_path / "empty.png").write_bytes(b"")
    empty = rf"cannot read .* {message(tmp_path / 'empty.png')}: the file is empty \(0 bytes\); replace"
    with pytest.raises(ReinError, match=empty):
        reader(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not an image at all\n")
    with pytest.raises(ReinError, match=rf"cannot read .* {message(tmp_path / 'notes.png')}: not a PNG, JPEG, BMP"):
        reader(tmp_path / "notes.png")
    with pytest.raises(ReinError, match=rf"not found: {message(tmp_path / 'gone.png')}"):
        reader(tmp_path / "gone.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_errors_naming_them(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    noise = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    whole = path.read_bytes()
    truncate(path, 0.7)
    if suffix == ".jpg":
        with Image.open(path) as image:
            image.verify()  # the old check of `rein predict` let this one through
    kind = "JPEG" if suffix == ".jpg" else "PNG"
    for reader in (read_image, check_image):  # check_image: the same checks, without converting the pixels
        with pytest.raises(ReinError) as err:
            reader(path)
        assert str(err.value) == (
            f"cannot decode image {path}: the {kind} data ends early (the file was cut short, as an interrupted copy "
            "or download leaves it); replace it with a complete copy"
        )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path.write_bytes(whole)  # what the message says to do
    assert np.array_equal(read_image(path), noise) if kind == "PNG" else read_image(path).shape == noise.shape


# A PNG whose zlib stream is complete and valid but holds fewer rows than its header declares: Pillow decodes it
# without an error, the missing rows left 0 (class 0, or ignore once converted). Written by hand here.
ROWS = (np.arange(24 * 40).reshape(24, 40) % 251).astype(np.uint8)  # (24, 40), no row all zero


@pytest.mark.parametrize(
    "kind, rows, colour, depth",
    [
        ("grey", ROWS, 0, 8),
        ("rgb", np.stack([ROWS, ROWS // 2, 255 - ROWS], axis=2), 2, 8),
        ("grey and alpha", np.stack([ROWS, ROWS], axis=2), 4, 8),
        ("16-bit grey", ROWS.astype(np.uint16) * 257, 0, 16),
    ],
)
def test_a_png_with_rows_missing_is_refused_by_every_reader(tmp_path, kind, rows, colour, depth):
    path = tmp_path / "half.png"
    hand_png(path, rows[:12], 24, colour=colour, depth=depth)
    with Image.open(path) as image:
        image.load()  # Pillow alone: no error
    readers = [read_image, check_image] + ([read_label] if kind == "grey" else [])
    for reader in readers:
        with pytest.raises(ReinError) as err:
            reader(path)
        what = "label" if reader is read_label else "image"
        assert str(err.value) == (
            f"{what} {path} is incomplete: its pixel data holds 12 of 24 rows; replace it with a complete copy"
        )
    hand_png(path, rows, 24, colour=colour, depth=depth)  # the complete file, as the message says
    for reader in readers:
        reader(path)


def test_palette_and_one_bit_pngs_with_rows_missing(tmp_path):
    for mode, ids in (("P", ROWS % 7), ("1", ROWS % 2 == 1)):
        path = tmp_path / f"{mode}.png"
        image = Image.fromarray(ids) if mode == "1" else Image.fromarray(ids).convert("P")
        image.save(path)
        assert drop_rows(path, 0.25) == (6, 24)
        for reader in (read_image, read_label):
            with pytest.raises(ReinError, match=rf"{message(path)} is incomplete: its pixel data holds 6 of 24 rows"):
                reader(path)


def test_an_interlaced_png_with_passes_missing(tmp_path):
    def adam7(rows: np.ndarray, passes: int) -> bytes:  # the first passes of an interlaced greyscale PNG
        starts = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        raw = b"".join(b"\0" + row.tobytes() for x, y, dx, dy in starts[:passes] for row in rows[y::dy, x::dx])
        header = struct.pack(">IIBBBBB", rows.shape[1], rows.shape[0], 8, 0, 0, 0, 1)
        chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + chunks

    odd = ROWS[:23]  # an odd height: the last pass (odd rows) leaves the last row alone
    path = tmp_path / "interlaced.png"
    path.write_bytes(adam7(odd, 7))
    assert np.array_equal(read_label(path), odd)
    path.write_bytes(adam7(odd, 6))
    with pytest.raises(ReinError, match=r"holds 33 of 44 rows of its 7 interlaced passes; replace it"):
        read_label(path)


def test_a_complete_png_is_never_refused_whatever_its_last_row(tmp_path):
    path = tmp_path / "ok.png"
    zero = ROWS.copy()
    zero[-3:] = 0  # road (class 0) along the bottom: what missing rows would also look like
    Image.fromarray(zero).save(path)
    assert np.array_equal(read_label(path), zero)
    pattern = (np.arange(40) * 151 + 89).astype(np.uint8)  # the reader's own marker of a row not written
    marked = ROWS.copy()
    marked[-1] = pattern
    Image.fromarray(marked).save(path)
    assert np.array_equal(read_label(path), marked)  # counted in the stream, found complete


def test_a_sixteen_bit_colour_label_with_rows_missing(tmp_path):
    pytest.importorskip("cv2")
    path = tmp_path / "synthia.png"
    rows = np.zeros((12, 40, 3), np.uint16)
    rows[..., 0] = 5
    hand_png(path, rows, 24, colour=2, depth=16)
    with pytest.raises(ReinError, match=rf"label {message(path)} is incomplete: its pixel data holds 12 of 24 rows"):
        read_label(path, bits=16)


def test_truncated_images_are_never_loaded_as_whole(tmp_path, monkeypatch):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path)
    truncate(path, 0.7)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some library or script sets it
    with pytest.raises(ReinError) as err:
        read_image(path)
    assert str(err.value) == (
        "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on (set by a library or script in this process), which would read "
        "cut-off images as complete; set it back to False"
    )
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # what it says to do
    with pytest.raises(ReinError, match="the JPEG data ends early"):
        read_image(path)


# The pixel limit, checked from the header before any decoding.


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    bomb_png(path, 100_000, 100_000)  # 10 gigapixels declared in a few hundred bytes
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(ReinError, match=rf"image {message(path)} declares 100000x100000 pixels .*REIN_MAX_PIXELS="):
        read_image(path)
    assert time.perf_counter() - start < 1.0
    jpeg = tmp_path / "bomb.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    data = bytearray(jpeg.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") * 2  # height, width in the frame header
    jpeg.write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(ReinError, match=rf"image {message(jpeg)} declares 60000x60000 pixels"):
        read_image(jpeg)
    assert time.perf_counter() - start < 1.0


def test_the_limit_is_read_from_the_environment_at_each_call(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(RGB).save(path)
    monkeypatch.setenv("REIN_MAX_PIXELS", "3")
    with pytest.raises(ReinError, match=rf"{message(path)} declares 2x2 pixels .*over the limit .*REIN_MAX_PIXELS=4"):
        read_image(path)
    with pytest.raises(ReinError, match="declares 2x2"):
        check_image(path)
    monkeypatch.setenv("REIN_MAX_PIXELS", "4")
    assert read_image(path).shape == (2, 2, 3) and check_image(path) == (2, 2)
    monkeypatch.setenv("REIN_MAX_PIXELS", "many")
    with pytest.raises(ReinError, match="REIN_MAX_PIXELS='many' must be a positive whole number"):
        read_image(path)


def test_the_limit_decides_even_above_pillows_own_ceiling(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(np.full((50, 60, 3), 7, np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone refuses over 2000 pixels at open
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert read_image(path).shape == (50, 60, 3)  # 3000 pixels: within the default limit of 100 megapixels
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting untouched


def test_a_failed_write_names_the_file_it_was_for(tmp_path):
    target = tmp_path / "results.json"
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise OSError(27, "File too large")  # what a write of an open file raises: no file name
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone, nothing took the final name
