"""The safe image and label readers: full decode, the pixel limit before decoding, and the rule for every mode."""

import re
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from rein_cli.errors import ReinError
from rein_cli.io import atomic_path, check_image, read_image, read_label

from .helpers import bomb_png, truncate

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
    truncate(path, 0.7)
    if suffix == ".jpg":
        with Image.open(path) as image:
            image.verify()  # the old check of `rein predict` let this one through
    for reader in (read_image, check_image):  # check_image: the same checks, without converting the pixels
        with pytest.raises(ReinError, match=rf"cannot decode image {message(path)} .*damaged or truncated: replace it"):
            reader(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


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
