"""`rein data prepare` on fakes of every official layout: every converted pixel checked against the label
tables, safe extraction, bad inputs, resuming, the Mapillary half-resolution copy, custom folders."""

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.manifest import read_manifest
from rein_cli.data.prepare import prepare
from rein_cli.errors import ReinError
from rein_cli.io import relative_path

from . import fake_datasets as fake
from .helpers import bomb_png, read_pairs, truncate

# The tables, written out independently of the code under test (rein-facts §9).
CITYSCAPES = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
SYNTHIA = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18}
MAPILLARY = {
    7: 0,
    8: 0,
    10: 0,
    13: 0,
    14: 0,
    23: 0,
    24: 0,
    2: 1,
    9: 1,
    11: 1,
    15: 1,
    17: 2,
    6: 3,
    3: 4,
    44: 5,
    45: 5,
    47: 5,
    48: 6,
    46: 7,
    49: 7,
    50: 7,
    30: 8,
    29: 9,
    27: 10,
    19: 11,
    20: 12,
    21: 12,
    22: 12,
    55: 13,
    61: 14,
    54: 15,
    58: 16,
    57: 17,
    52: 18,
}


def mapped(raw: np.ndarray, table: dict) -> np.ndarray:
    out = np.full(raw.shape, 255, dtype=np.uint8)
    for source, target in table.items():
        out[raw == source] = target
    return out


def test_cityscapes_from_the_official_archives(tmp_path):
    sources, raw = fake.cityscapes(tmp_path / "src")
    manifest = prepare("cityscapes", sources, tmp_path / "out", workers=2, progress=False)
    data = json.loads(manifest.read_text())
    assert data["counts"] == {"train": 4, "val": 2, "test": 1} and data["dataset"] == "cityscapes"
    assert data["splits"]["test"] == [{"image": "source/leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png"}]
    assert [a["name"] for a in data["source"]["archives"]] == [
        "leftImg8bit_trainvaltest.zip",
        "gtFine_trainvaltest.zip",
    ]
    assert data["label_space"]["classes"][13] == "car" and "train ids" in data["converted"]
    assert any("published count is 2975" in w for w in data["warnings"])
    for split in ("train", "val"):
        for image, label in read_pairs(manifest, split):
            stem = image.name.removesuffix("_leftImg8bit.png")
            assert np.array_equal(label, mapped(raw[stem], CITYSCAPES)), stem
    item = data["splits"]["train"][0]
    assert item["image"].startswith("source/leftImg8bit/train/") and item["label"].startswith("labels/train/")


def test_gta5_resizes_odd_labels_and_reports_them(tmp_path):
    sources, raw = fake.gta5(tmp_path / "src")
    manifest = prepare("gta", sources, tmp_path / "out", workers=1, progress=False)
    data = json.loads(manifest.read_text())
    assert (
        data["counts"] == {"train": 4} and len(data["resized_labels"]) == 1 and "00003.png" in data["resized_labels"][0]
    )
    for image, label in read_pairs(manifest, "train"):
        truth = raw[image.stem]
        if truth.shape != label.shape:
            truth = np.asarray(Image.fromarray(truth).resize((label.shape[1], label.shape[0]), Image.NEAREST))
        assert np.array_equal(label, mapped(truth, CITYSCAPES))


def test_synthia_16_bit_labels(tmp_path):
    pytest.importorskip("cv2")
    sources, raw = fake.synthia(tmp_path / "src")
    manifest = prepare("synthia", sources, tmp_path / "out", workers=1, progress=False)
    for image, label in read_pairs(manifest, "train"):
        assert np.array_equal(label, mapped(raw[image.stem], SYNTHIA))
    assert set(np.unique(label)) - {255} <= set(SYNTHIA.values())  # 16 classes: no terrain, truck, train


def test_bdd100k_labels_are_used_in_place_after_checking(tmp_path):
    sources, raw = fake.bdd100k(tmp_path / "src")
    official = sources[0].with_name("bdd100k_images_10k.zip")
    shutil.copy(sources[0], official)
    with pytest.raises(
        ReinError, match=r"bdd100k_images_10k.zip has MD5 .*, the published one is 08f26aecceda982568063d3d5873378e"
    ):
        prepare("bdd", [official, sources[1]], tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out" / "source").exists()  # checked before extracting
    manifest = prepare("bdd", sources, tmp_path / "out", workers=1, progress=False)
    data = json.loads(manifest.read_text())
    assert data["counts"] == {"train": 3, "val": 2} and not (tmp_path / "out" / "labels").exists()
    for image, label in read_pairs(manifest, "val"):
        assert np.array_equal(label, raw[image.stem])
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "out" / "source", bad)
    victim = next((bad / "bdd100k" / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    Image.fromarray(np.full((fake.H, fake.W), 40, np.uint8)).save(victim)
    with pytest.raises(ReinError, match=rf"not train-ids ids, e\.g\. {re.escape(str(victim))}: \[40\]"):  # the label
        prepare("bdd", [bad], tmp_path / "out2", workers=1, progress=False)
    assert not (tmp_path / "out2" / "manifest.json").exists()


def test_mapillary_v12_mapping_and_half_resolution_validation(tmp_path):
    root, raw = fake.mapillary(tmp_path / "src")
    archive = fake.zip_folder(root, tmp_path / "mapillary-vistas-dataset_public_v2.0.zip")
    manifest = prepare("map", [archive], tmp_path / "out", workers=2, progress=False)
    for image, label in read_pairs(manifest, "train"):
        assert np.array_equal(label, mapped(raw[image.stem], MAPILLARY))
    for image, label in read_pairs(manifest, "val"):
        original = raw[image.stem]
        half = (original.shape[1] // 2, original.shape[0] // 2)
        assert Image.open(image).size == half and image.suffix == ".jpg"
        expected = np.asarray(Image.fromarray(mapped(original, MAPILLARY)).resize(half, Image.NEAREST))
        assert np.array_equal(label, expected)
        # the image: bicubic, then saved with Pillow's default JPEG settings (quality 75), byte for byte
        source = root / "validation" / "images" / f"{image.stem}.jpg"
        official = tmp_path / "official.jpg"
        Image.open(source).convert("RGB").resize(half, Image.BICUBIC).save(official)
        assert image.read_bytes() == official.read_bytes()


def test_acdc_and_its_conditions(tmp_path):
    sources, raw = fake.acdc(tmp_path / "src")
    manifest = prepare("acdc", sources, tmp_path / "acdc", workers=1, progress=False)
    assert json.loads(manifest.read_text())["counts"] == {"train": 4, "val": 4, "test": 4}
    fog = tmp_path / "acdc-fog" / "manifest.json"
    assert json.loads(fog.read_text())["counts"] == {"train": 1, "val": 1, "test": 1}
    ((test_image, no_label),) = read_manifest(fog).samples("test")  # the server keeps the test labels
    assert "/fog/test/" in test_image.as_posix() and test_image.is_file() and no_label is None
    for image, label in read_pairs(fog, "val"):
        assert "/fog/" in image.as_posix()
        assert np.array_equal(label, raw["fog/" + image.name.removesuffix("_rgb_anon.png")])


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs the zip tool to make a split archive")
@pytest.mark.parametrize("name", ["vistas", "mapillary-vistas-dataset_public_v2.0"])  # the official name has a dot
def test_split_zip_parts(tmp_path, name):
    root, _ = fake.mapillary(tmp_path / "src")
    (root / "LICENSE.bin").write_bytes(np.random.default_rng(0).bytes(200_000))  # enough bytes for several parts
    subprocess.run(["zip", "-q", "-r", "-s", "64k", str(tmp_path / f"{name}.zip"), "."], cwd=root, check=True)
    parts = sorted(tmp_path.glob(f"{name}.z*"))
    assert len(parts) > 2
    manifest = prepare("mapillary", parts, tmp_path / "out", workers=1, progress=False)
    assert json.loads(manifest.read_text())["counts"] == {"train": 3, "val": 2}


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
    with pytest.raises(ReinError, match="pointing outside"):
        prepare("cityscapes", [link], tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not list((tmp_path / "out").rglob("*.txt")) and not list((tmp_path / "out").rglob("escape"))


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


def test_an_interrupted_prepare_resumes_to_the_same_result(cityscapes_folder, tmp_path, monkeypatch):
    folder, _ = cityscapes_folder
    clean = prepare("cityscapes", [folder], tmp_path / "clean", workers=1, progress=False)
    import rein_cli.data.prepare as module

    real, calls = module.convert_pair, []

    def flaky(task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(module, "convert_pair", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare("cityscapes", [folder], tmp_path / "resumed", workers=1, progress=False)
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # not complete, and it does not look complete
    assert len(list((tmp_path / "resumed" / "labels").rglob("*.png"))) == 2
    monkeypatch.setattr(module, "convert_pair", real)
    resumed = prepare("cityscapes", [folder], tmp_path / "resumed", workers=1, progress=False)
    a, b = json.loads(clean.read_text()), json.loads(resumed.read_text())
    assert a["counts"] == b["counts"]
    for x, y in zip(a["splits"]["train"], b["splits"]["train"], strict=True):
        assert (clean.parent / x["label"]).read_bytes() == (resumed.parent / y["label"]).read_bytes()


def test_ensure_prepared_generates_only_the_synthetic_benchmark(tmp_path, monkeypatch):
    from rein_cli.data import synthetic
    from rein_cli.data.prepare import ensure_prepared

    calls, real = [], synthetic.generate_synthetic

    def small(root, progress=True):  # the real generator, a few tiny scenes
        calls.append(root)
        return real(root, num_train=2, num_val=1, width=64, height=64, workers=1, progress=False)

    monkeypatch.setattr(synthetic, "generate_synthetic", small)
    manifest = ensure_prepared("synthetic-night", tmp_path / "root", progress=False)
    assert manifest.dataset == "synthetic-night" and manifest.counts == {"val": 1} and calls == [tmp_path / "root"]
    assert ensure_prepared("synthetic", tmp_path / "root").counts == {"train": 2, "val": 1} and len(calls) == 1
    with pytest.raises(
        ReinError, match=r"dataset bdd100k is not prepared under .*rein data prepare bdd100k --from PATH"
    ):
        ensure_prepared("bdd", tmp_path / "root")


def test_prepare_dataset_chooses_the_folder_and_dispatches_custom(cityscapes_folder, tmp_path):
    from rein_cli.data.prepare import prepare_dataset

    folder, _ = cityscapes_folder
    manifest = prepare_dataset("citys", [folder], tmp_path / "root", workers=1, progress=False)
    assert manifest.path == tmp_path / "root" / "cityscapes" / "manifest.json" and manifest.counts["train"] == 4
    with pytest.raises(ReinError, match="custom needs --name NAME and one --from FOLDER"):
        prepare_dataset("custom", [folder], tmp_path / "root")


def test_a_prepared_dataset_is_never_lost_to_a_typo(cityscapes_folder, tmp_path, capsys):
    from .helpers import errors, rein

    folder, _ = cityscapes_folder
    root = tmp_path / "root"
    assert rein("data", "prepare", "cityscapes", "--from", folder, "--data-root", root, "--no-progress") == 0
    manifest = root / "cityscapes" / "manifest.json"
    before = manifest.read_bytes()
    assert rein("data", "prepare", "cityscapes", "--from", tmp_path / "TYPO", "--data-root", root) == 1
    assert (
        "is already prepared (train 4, val 2, test 1); to prepare it again run `rein data prepare cityscapes"
        in errors(capsys)
    )
    assert manifest.read_bytes() == before
    assert rein("data", "prepare", "cityscapes", "--from", tmp_path / "TYPO", "--data-root", root, "--overwrite") == 1
    assert "TYPO does not exist" in errors(capsys)
    assert manifest.read_bytes() == before  # the sources are checked before the old manifest goes
    args = ["--from", folder, "--data-root", root, "--overwrite", "--no-progress"]
    assert rein("data", "prepare", "cityscapes", *args) == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert rein("data", "prepare", "cityscapes", "--from", folder, "--out", blocker) == 1
    assert "is a file, not a folder" in errors(capsys) and blocker.read_text() == "x"


def test_a_full_disk_while_extracting_says_so(tmp_path, monkeypatch):
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


DAMAGES = {
    "empty": (lambda p: p.write_bytes(b""), "the file is empty \\(0 bytes\\)"),
    "truncated": (lambda p: truncate(p, 0.6), "damaged or truncated"),
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
    assert len(problems) == 1 and re.match(rf"(cannot decode )?label {re.escape(str(victim))} ", problems[0])
    with pytest.raises(ReinError) as training:
        data[1]
    assert str(training.value) == problems[0]
    if damage == "values":
        assert "holds values [19] that are no class id (0-18) nor the ignore index 255" in problems[0]


def test_overwrite_writes_every_label_and_copy_anew(tmp_path):
    root, _ = fake.mapillary(tmp_path / "src")
    archive = fake.zip_folder(root, tmp_path / "mapillary-vistas-dataset_public_v2.0.zip")
    out = tmp_path / "out"
    manifest = prepare("map", [archive], out, workers=1, progress=False)
    pairs = read_pairs(manifest, "train") + read_pairs(manifest, "val")
    files = sorted(p for p in (out / "labels").rglob("*.png")) + sorted((out / "half").rglob("*.*"))
    good = {p: p.read_bytes() for p in files}
    for p in files:  # as if prepared by an older version, or from other sources: valid files, other content
        Image.open(p).point(lambda v: 0).save(p, format="JPEG" if p.suffix == ".jpg" else "PNG")
    assert prepare("map", [archive], out, workers=1, overwrite=True, progress=False) == manifest
    assert {p: p.read_bytes() for p in files} == good
    assert len(pairs) == 5 and len(files) == 3 + 2 * 2  # 3 train labels; 2 val images and labels at half size
    assert not (out / ".replacing").exists()


def test_an_interrupted_overwrite_is_resumed_by_writing_everything_again(cityscapes_folder, tmp_path, monkeypatch):
    from rein_cli.data import prepare as module

    folder, _ = cityscapes_folder
    out = tmp_path / "out"
    prepare("cityscapes", [folder], out, workers=1, progress=False)
    label = next((out / "labels" / "train").iterdir())
    good = label.read_bytes()
    Image.fromarray(np.zeros((fake.H, fake.W), np.uint8)).save(label)
    monkeypatch.setattr(module, "parallel_map", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare("cityscapes", [folder], out, workers=1, overwrite=True, progress=False)
    assert not (out / "manifest.json").exists() and (out / ".replacing").is_file()
    monkeypatch.undo()
    prepare("cityscapes", [folder], out, workers=1, progress=False)  # the same command resumes: no --overwrite
    assert label.read_bytes() == good and not (out / ".replacing").exists()


def test_all_sources_are_checked_before_an_archive_is_extracted_again(tmp_path):
    sources, _ = fake.cityscapes(tmp_path / "src")
    out = tmp_path / "out"
    manifest = prepare("cityscapes", sources, out, workers=1, progress=False)
    before = manifest.read_bytes()
    os.utime(sources[0], (1, 1))  # a changed archive: it would be extracted again
    with pytest.raises(ReinError, match="TYPO does not exist"):
        prepare("cityscapes", [sources[0], tmp_path / "TYPO"], out, overwrite=True, progress=False)
    assert manifest.read_bytes() == before
    (tmp_path / "parts.z01").write_bytes(b"PK\x07\x08")  # the first part of a split zip, its .zip missing
    with pytest.raises(ReinError, match=r"parts\.zip, the last part of a split archive, does not exist"):
        prepare("cityscapes", [*sources, tmp_path / "parts.z01"], out, overwrite=True, progress=False)


def test_a_subset_manifest_goes_with_its_dataset(tmp_path):
    sources, _ = fake.acdc(tmp_path / "src")
    prepare("acdc", sources, tmp_path / "acdc", workers=1, progress=False)
    assert (tmp_path / "acdc-fog" / "manifest.json").is_file()
    os.utime(sources[0], (1, 1))
    from rein_cli.data import archives

    def fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    original = archives.shutil.copyfileobj
    archives.shutil.copyfileobj = fails
    try:
        with pytest.raises(ReinError, match="the disk or the file-size limit is full"):
            prepare("acdc", sources, tmp_path / "acdc", workers=1, overwrite=True, progress=False)
    finally:
        archives.shutil.copyfileobj = original
    # the archive was being extracted again: neither acdc nor acdc-fog may be taken for complete
    assert not (tmp_path / "acdc" / "manifest.json").exists()
    assert not (tmp_path / "acdc-fog" / "manifest.json").exists()
    prepare("acdc", sources, tmp_path / "acdc", workers=1, progress=False)
    assert (tmp_path / "acdc-fog" / "manifest.json").is_file()
