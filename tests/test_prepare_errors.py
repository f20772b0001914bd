"""`rein data prepare` on unsafe, truncated or damaged inputs and a full disk: the file named, nothing half-made."""

import io
import json
import re
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.prepare import prepare
from rein_cli.errors import ReinError
from rein_cli.io import relative_path

from . import fake_datasets as fake
from .helpers import bomb_png, drop_rows, truncate


def test_unsafe_archives_are_refused_with_nothing_extracted(tmp_path):
    for name, member in (("slip.zip", "../evil.txt"), ("abs.zip", "/tmp/evil.txt")):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("leftImg8bit/ok.txt", "fine")
            z.writestr(member, "evil")
        with pytest.raises(ReinError, match="unsafe path"):
            prepare("cityscapes", [tmp_path / name], tmp_path / "out", progress=False)
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as t:
        info = tarfile.TarInfo("leftImg8bit/escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        t.addfile(info)
    with pytest.raises(
        ReinError, match=re.escape("its link 'leftImg8bit/escape' -> '../../../etc/passwd' leads outside")
    ):
        prepare("cityscapes", [link], tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not list((tmp_path / "out").rglob("*.txt")) and not list((tmp_path / "out").rglob("escape"))


def _tar(path, members) -> None:
    """A tar of (name, kind, link or data) members: kind "sym", "hard" or "file"."""
    with tarfile.open(path, "w") as t:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                t.addfile(info, io.BytesIO(value))
                continue
            info.type, info.linkname = (tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE), value
            t.addfile(info)


LINK_CHAINS = {  # members, what the line says was refused
    "a chain of links": (
        [("leftImg8bit/a", "sym", ".."), ("leftImg8bit/x", "sym", "a/..")],
        "its link 'leftImg8bit/x' -> 'a/..' leads outside the folder it is extracted into through its link "
        "'leftImg8bit/a' -> '..'",
    ),
    "a link to a link": (
        [("leftImg8bit/s", "sym", "t.txt"), ("leftImg8bit/h", "hard", "leftImg8bit/s")],
        "its hard link 'leftImg8bit/h' -> 'leftImg8bit/s' is a link to a link",
    ),
    "a hard link outside": (
        [("leftImg8bit/sub/h", "hard", "../x")],
        "its hard link 'leftImg8bit/sub/h' -> '../x' leads outside the folder it is extracted into",
    ),
    "a file written through a link": (
        [("leftImg8bit/up", "sym", ".."), ("leftImg8bit/up/../evil.txt", "file", b"evil")],
        "its member 'leftImg8bit/up/../evil.txt' would be written through a link that leads outside",
    ),
}


@pytest.mark.parametrize("case", LINK_CHAINS)
def test_links_that_lead_outside_are_refused_by_name_and_the_way_out_works(tmp_path, case):
    members, refused = LINK_CHAINS[case]
    sources, _ = fake.cityscapes(tmp_path / "src")
    images = tmp_path / "leftImg8bit.tar"  # the images archive as a tar, with the bad members added
    good = [(n, "file", zipfile.ZipFile(sources[0]).read(n)) for n in zipfile.ZipFile(sources[0]).namelist()]
    _tar(images, good + members)
    with pytest.raises(ReinError) as err:
        prepare("cityscapes", [images, sources[1]], tmp_path / "data" / "out", progress=False)
    line = str(err.value)
    assert line.startswith(f"archive {images}: {refused}") or line.startswith(f"archive {images} "), line
    assert refused in line and "nothing was extracted" in line
    assert "extract it yourself, check what it holds, and give the folder to --from" in line
    assert not (tmp_path / "data" / "out" / "source").exists() and not list(tmp_path.rglob("evil.txt"))
    # the way out: extract it by hand, leave out what does not belong, give the folder
    folder = tmp_path / "by-hand"
    with tarfile.open(images) as t:
        t.extractall(folder, members=[m for m in t.getmembers() if m.isfile() and "evil" not in m.name], filter="data")
    zipfile.ZipFile(sources[1]).extractall(folder)
    manifest = prepare("cityscapes", [folder], tmp_path / "data" / "out", progress=False)
    assert json.loads(manifest.read_text())["counts"] == {"train": 4, "val": 2, "test": 1}


def test_a_truncated_archive_is_a_clear_error(tmp_path):
    sources, _ = fake.cityscapes(tmp_path / "src")
    data = sources[0].read_bytes()
    sources[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(ReinError, match=r"leftImg8bit_trainvaltest.zip.*download it again"):
        prepare("cityscapes", sources, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_pairs_name_the_file(cityscapes_folder, tmp_path):
    folder, _ = cityscapes_folder
    labels = sorted((folder / "gtFine" / "train").rglob("*_labelIds.png"))
    labels[0].unlink()
    with pytest.raises(
        ReinError,
        match=r"1 train images of cityscapes have no label, e\.g\. leftImg8bit/train/aachen/aachen_000000_000000",
    ):
        prepare("cityscapes", [folder], tmp_path / "o1", progress=False)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels[0])
    with pytest.raises(ReinError, match=rf"label {labels[0]} is 10x10 but its image .* is 48x24"):
        prepare("cityscapes", [folder], tmp_path / "o2", workers=1, progress=False)
    Image.fromarray(np.full((24, 48), 45, np.uint8)).save(labels[0])  # 45 is no Cityscapes id
    with pytest.raises(ReinError, match=rf"not cityscapes-ids ids, e\.g\. {re.escape(str(labels[0]))}: \[45\]"):
        prepare("cityscapes", [folder], tmp_path / "o3", workers=1, progress=False)
    manifest = prepare("cityscapes", [folder], tmp_path / "o4", workers=1, allow_unknown=True, progress=False)
    unknown = json.loads(manifest.read_text())["unknown_label_values"]
    assert unknown == {relative_path(labels[0], tmp_path / "o4"): [45]}  # the label file, as the manifest names files
    image = folder / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000001_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:100])
    with pytest.raises(ReinError, match=rf"cannot decode image {image}"):
        prepare("cityscapes", [folder], tmp_path / "o5", workers=1, progress=False)


def test_a_full_disk_while_extracting_says_so_and_the_rerun_completes(tmp_path, monkeypatch):
    import errno

    from rein_cli.data import archives

    sources, _ = fake.cityscapes(tmp_path / "src")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives.shutil, "copyfileobj", full)
    with pytest.raises(
        ReinError, match=r"cannot extract .* the disk or the file-size limit is full \(No space left on device; .*rerun"
    ):
        prepare("cityscapes", sources, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.undo()  # space again: the rerun it names completes
    manifest = prepare("cityscapes", sources, tmp_path / "out", progress=False)
    assert json.loads(manifest.read_text())["counts"] == {"train": 4, "val": 2, "test": 1}


DAMAGES = {
    "empty": (lambda p: p.write_bytes(b""), "the file is empty \\(0 bytes\\)"),
    "truncated": (lambda p: truncate(p, 0.6), ": the PNG data ends early \\(the file was cut short"),
    "rows missing": (lambda p: drop_rows(p, 0.5), " is incomplete: its pixel data holds 12 of 24 rows; replace it"),
    "not an image": (lambda p: p.write_text("<html>login</html>"), "not a PNG, JPEG"),
    "colour": (lambda p: Image.new("RGB", (fake.W, fake.H)).save(p), "has mode RGB; expected a single-channel"),
    "16-bit": (lambda p: Image.fromarray(np.full((fake.H, fake.W), 7, np.uint16)).save(p), "has mode I;16"),
    "bomb": (lambda p: bomb_png(p, 50_000, 50_000), "declares 50000x50000 pixels"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_label_is_named_also_from_worker_processes(cityscapes_folder, tmp_path, damage):
    folder, _ = cityscapes_folder
    victim = sorted((folder / "gtFine" / "val").rglob("*_labelIds.png"))[-1]
    spoil, expected = DAMAGES[damage]
    spoil(victim)
    start = time.perf_counter()
    with pytest.raises(ReinError) as err:
        prepare("cityscapes", [folder], tmp_path / "out", workers=2, progress=False)
    assert time.perf_counter() - start < 30
    assert re.search(rf"label {re.escape(str(victim))}[: ]", str(err.value)) and re.search(expected, str(err.value))
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))  # nothing half-written


def test_a_damaged_or_oversized_image_is_named(cityscapes_folder, tmp_path):
    folder, _ = cityscapes_folder
    image = sorted((folder / "leftImg8bit" / "train").rglob("*.png"))[0]
    data = image.read_bytes()
    bomb_png(image, 30_000, 30_000)
    start = time.perf_counter()
    with pytest.raises(
        ReinError, match=rf"image {re.escape(str(image))} declares 30000x30000 pixels .*REIN_MAX_PIXELS"
    ):
        prepare("cityscapes", [folder], tmp_path / "out", workers=2, progress=False)
    assert time.perf_counter() - start < 5
    image.write_bytes(b"")
    with pytest.raises(ReinError, match=rf"image {re.escape(str(image))}: the file is empty"):
        prepare("cityscapes", [folder], tmp_path / "out", workers=2, progress=False)
    image.write_bytes(data)
    drop_rows(image, 0.5)  # a complete zlib stream of half the rows: Pillow alone reads it, the rest black
    with pytest.raises(ReinError) as err:
        prepare("cityscapes", [folder], tmp_path / "out", workers=2, progress=False)
    assert (
        str(err.value)
        == f"image {image} is incomplete: its pixel data holds 12 of 24 rows; replace it with a complete copy"
    )
    image.write_bytes(data)  # a complete copy, as the message says
    assert prepare("cityscapes", [folder], tmp_path / "out", workers=2, progress=False).is_file()


def test_a_truncated_synthia_label_is_named(tmp_path):
    pytest.importorskip("cv2")
    sources, _ = fake.synthia(tmp_path / "src")
    victim = sorted((tmp_path / "src").rglob("LABELS/*.png"))[1]
    truncate(victim, 0.5)
    with pytest.raises(ReinError, match=rf"label {re.escape(str(victim))}"):
        prepare("synthia", sources, tmp_path / "out", workers=2, progress=False)


# The same damage, once prepared: `rein data verify` and the training dataset say the same thing.
PREPARED_DAMAGES = {
    "truncated": lambda p: truncate(p, 0.6),
    "rows missing": lambda p: drop_rows(p, 0.5),
    "colour": lambda p: Image.new("RGB", (fake.W, fake.H)).save(p),
    "16-bit": lambda p: Image.fromarray(np.full((fake.H, fake.W), 3, np.uint16)).save(p),
    "size": lambda p: Image.fromarray(np.zeros((fake.H, fake.W - 8), np.uint8)).save(p),
    "values": lambda p: Image.fromarray(np.full((fake.H, fake.W), 19, np.uint8)).save(p),
}


@pytest.mark.parametrize("damage", PREPARED_DAMAGES)
def test_verify_and_training_share_the_checks_of_prepare(cityscapes_folder, tmp_path, damage):
    from rein_cli.data.dataset import SegmentationDataset
    from rein_cli.data.verify import verify

    folder, _ = cityscapes_folder
    manifest = prepare("cityscapes", [folder], tmp_path / "out", workers=1, progress=False)
    assert verify(tmp_path / "out", tmp_path, workers=1, progress=False)[1] == []
    data = SegmentationDataset(manifest, "train")
    victim = data.samples[1][1]
    PREPARED_DAMAGES[damage](victim)
    _, problems = verify(tmp_path / "out", tmp_path, workers=2, progress=False)
    assert len(problems) == 1 and re.match(rf"(cannot decode )?label {re.escape(str(victim))}[: ]", problems[0])
    with pytest.raises(ReinError) as training:
        data[1]
    assert str(training.value) == problems[0]
    if damage == "values":
        assert "holds values [19] that are no class id (0-18) nor the ignore index 255" in problems[0]
