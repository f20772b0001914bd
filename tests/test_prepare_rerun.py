"""`rein data prepare` again: an interrupted run resumes, --overwrite writes all anew, nothing prepared is lost."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.prepare import prepare
from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .helpers import errors, read_pairs, rein


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


def test_a_prepared_dataset_is_never_lost_to_a_typo(cityscapes_folder, tmp_path, capsys):
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
