"""`rein data prepare` on fakes of every official layout: every converted pixel checked against the label
tables, safe extraction, bad inputs, resuming, the Mapillary half-resolution copy, custom folders."""

import json
import shutil
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.prepare import prepare
from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .test_cli import rein

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
MAPILLARY = {7: 0, 8: 0, 10: 0, 13: 0, 14: 0, 23: 0, 24: 0, 2: 1, 9: 1, 11: 1, 15: 1, 17: 2, 6: 3, 3: 4, 44: 5, 45: 5, 47: 5,
             48: 6, 46: 7, 49: 7, 50: 7, 30: 8, 29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15, 58: 16,
             57: 17, 52: 18}  # fmt: skip


def mapped(raw: np.ndarray, table: dict) -> np.ndarray:
    out = np.full(raw.shape, 255, dtype=np.uint8)
    for source, target in table.items():
        out[raw == source] = target
    return out


def load(manifest, split):
    data = SegmentationDataset(manifest, split)
    return [(Path_(i["path"]), i["label"].numpy()) for i in (data[k] for k in range(len(data)))]


def Path_(p):
    from pathlib import Path

    return Path(p)


def test_cityscapes_from_the_official_archives(tmp_path):
    sources, raw = fake.cityscapes(tmp_path / "src")
    manifest = prepare("cityscapes", sources, tmp_path / "out", workers=2, progress=False)
    data = json.loads(manifest.read_text())
    assert data["counts"] == {"train": 4, "val": 2} and data["dataset"] == "cityscapes"
    assert [a["name"] for a in data["source"]["archives"]] == ["leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"]
    assert data["label_space"]["classes"][13] == "car" and "train ids" in data["converted"]
    assert any("published count is 2975" in w for w in data["warnings"])
    for split in ("train", "val"):
        for image, label in load(manifest, split):
            stem = image.name.removesuffix("_leftImg8bit.png")
            assert np.array_equal(label, mapped(raw[stem], CITYSCAPES)), stem
    item = data["splits"]["train"][0]
    assert item["image"].startswith("source/leftImg8bit/train/") and item["label"].startswith("labels/train/")


def test_gta5_resizes_odd_labels_and_reports_them(tmp_path):
    sources, raw = fake.gta5(tmp_path / "src")
    manifest = prepare("gta", sources, tmp_path / "out", workers=1, progress=False)
    data = json.loads(manifest.read_text())
    assert data["counts"] == {"train": 4} and len(data["resized_labels"]) == 1 and "00003.png" in data["resized_labels"][0]
    for image, label in load(manifest, "train"):
        truth = raw[image.stem]
        if truth.shape != label.shape:
            truth = np.asarray(Image.fromarray(truth).resize((label.shape[1], label.shape[0]), Image.NEAREST))
        assert np.array_equal(label, mapped(truth, CITYSCAPES))


def test_synthia_16_bit_labels(tmp_path):
    pytest.importorskip("cv2")
    sources, raw = fake.synthia(tmp_path / "src")
    manifest = prepare("synthia", sources, tmp_path / "out", workers=1, progress=False)
    for image, label in load(manifest, "train"):
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
    for image, label in load(manifest, "val"):
        assert np.array_equal(label, raw[image.stem])
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "out" / "source", bad)
    victim = next((bad / "bdd100k" / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    Image.fromarray(np.full((fake.H, fake.W), 40, np.uint8)).save(victim)
    with pytest.raises(ReinError, match=rf"not train-ids ids, e.g. {victim.stem}.jpg: \[40\]"):
        prepare("bdd", [bad], tmp_path / "out2", workers=1, progress=False)
    assert not (tmp_path / "out2" / "manifest.json").exists()


def test_mapillary_v12_mapping_and_half_resolution_validation(tmp_path):
    root, raw = fake.mapillary(tmp_path / "src")
    archive = fake.zip_folder(root, tmp_path / "mapillary-vistas-dataset_public_v2.0.zip")
    manifest = prepare("map", [archive], tmp_path / "out", workers=2, progress=False)
    for image, label in load(manifest, "train"):
        assert np.array_equal(label, mapped(raw[image.stem], MAPILLARY))
    for image, label in load(manifest, "val"):
        original = raw[image.stem]
        half = (original.shape[1] // 2, original.shape[0] // 2)
        assert Image.open(image).size == half and image.suffix == ".jpg"
        expected = np.asarray(Image.fromarray(mapped(original, MAPILLARY)).resize(half, Image.NEAREST))
        assert np.array_equal(label, expected)


def test_acdc_and_its_conditions(tmp_path):
    sources, raw = fake.acdc(tmp_path / "src")
    manifest = prepare("acdc", sources, tmp_path / "acdc", workers=1, progress=False)
    assert json.loads(manifest.read_text())["counts"] == {"train": 4, "val": 4}
    fog = tmp_path / "acdc-fog" / "manifest.json"
    assert json.loads(fog.read_text())["counts"] == {"train": 1, "val": 1}
    for image, label in load(fog, "val"):
        assert "/fog/" in image.as_posix()
        assert np.array_equal(label, raw["fog/" + image.name.removesuffix("_rgb_anon.png")])


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs the zip tool to make a split archive")
def test_split_zip_parts(tmp_path):
    root, _ = fake.mapillary(tmp_path / "src")
    (root / "LICENSE.bin").write_bytes(np.random.default_rng(0).bytes(200_000))  # enough bytes for several parts
    subprocess.run(["zip", "-q", "-r", "-s", "64k", str(tmp_path / "vistas.zip"), "."], cwd=root, check=True)
    parts = sorted(tmp_path.glob("vistas.z*"))
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


@pytest.fixture
def cityscapes_folder(tmp_path):
    """The fake Cityscapes, extracted."""
    sources, raw = fake.cityscapes(tmp_path / "src")
    folder = tmp_path / "extracted"
    for archive in sources:
        zipfile.ZipFile(archive).extractall(folder)
    return folder, raw


def test_bad_pairs_name_the_file(cityscapes_folder, tmp_path):
    folder, _ = cityscapes_folder
    labels = sorted((folder / "gtFine" / "train").rglob("*_labelIds.png"))
    labels[0].unlink()
    with pytest.raises(
        ReinError, match=r"1 train images of cityscapes have no label, e\.g\. leftImg8bit/train/aachen/aachen_000000_000000"
    ):
        prepare("cityscapes", [folder], tmp_path / "o1", progress=False)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels[0])
    with pytest.raises(ReinError, match=rf"label {labels[0]} is 10x10 but its image .* is 48x24"):
        prepare("cityscapes", [folder], tmp_path / "o2", workers=1, progress=False)
    Image.fromarray(np.full((24, 48), 45, np.uint8)).save(labels[0])  # 45 is no Cityscapes id
    with pytest.raises(ReinError, match=r"not cityscapes-ids ids, e\.g\. aachen_000000_000000_leftImg8bit.png: \[45\]"):
        prepare("cityscapes", [folder], tmp_path / "o3", workers=1, progress=False)
    manifest = prepare("cityscapes", [folder], tmp_path / "o4", workers=1, allow_unknown=True, progress=False)
    assert json.loads(manifest.read_text())["unknown_label_values"] == {"aachen_000000_000000_leftImg8bit.png": [45]}
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


def test_data_commands(cityscapes_folder, tmp_path, capsys):
    folder, _ = cityscapes_folder
    root = tmp_path / "root"
    assert rein("data", "prepare", "citys", "--from", folder, "--data-root", root, "--no-progress") == 0
    assert "prepared train: 4, val: 2" in capsys.readouterr().out
    assert rein("data", "list", "--data-root", root) == 0
    assert "cityscapes (citys)" in (out := capsys.readouterr().out) and "train 4" in out
    assert rein("data", "info", "cityscapes", "--data-root", root) == 0
    assert "test-time resize (keep ratio): 1024x512" in capsys.readouterr().out
    assert rein("data", "verify", "cityscapes", "--data-root", root, "--no-progress") == 0
    next((root / "cityscapes" / "labels" / "val").glob("*.png")).unlink()
    assert rein("data", "verify", "cityscapes", "--data-root", root, "--no-progress") == 1
    assert "missing label" in capsys.readouterr().err
    assert rein("data", "download", "gta5") == 0
    assert "https://download.visinf.tu-darmstadt.de/data/from_games/" in capsys.readouterr().out
    assert rein("data", "prepare", "citiscapes", "--from", folder) == 1
    assert 'did you mean "cityscapes"' in capsys.readouterr().err


def test_custom_folders(tmp_path, capsys):
    src = tmp_path / "mine"
    colors = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    (src / "classes.yaml").write_text("classes: [background, crack, moss]\ncolors: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]\n")
    truth = {}
    for i in range(12):
        fake.image(src / "images" / f"p{i:02d}.jpg", seed=i)
        ids = fake.label(tmp_path / "tmp.png", [0, 1, 2], seed=i)
        truth[f"p{i:02d}"] = ids
        Image.fromarray(np.asarray(colors, np.uint8)[ids]).save(src / "masks" / f"p{i:02d}.png")  # colour masks
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "cracks", "--data-root", root, "--no-progress") == 0
    data = json.loads((root / "cracks" / "manifest.json").read_text())
    assert data["counts"] == {"train": 11, "val": 1} and data["label_space"]["classes"] == ["background", "crack", "moss"]
    for image, label in load(root / "cracks" / "manifest.json", "train"):
        assert np.array_equal(label, truth[image.stem])
    Image.fromarray(np.full((fake.H, fake.W, 3), 7, np.uint8)).save(src / "masks" / "p03.png")
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", root) == 1
    assert "p03.png has colours that are no class in classes.yaml: [(7, 7, 7)]" in capsys.readouterr().err
    (src / "classes.yaml").unlink()
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", root) == 1
    assert "classes.yaml is missing" in capsys.readouterr().err


def test_train_on_a_custom_dataset_by_name(tmp_path):
    from .conftest import TINY_SETS

    src = tmp_path / "mine"
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            fake.image(src / "images" / split / f"{i}.png", seed=i, size=(64, 64))
            fake.label(src / "masks" / split / f"{i}.png", [0, 1, 255], seed=i, size=(64, 64))
    (src / "classes.yaml").write_text("classes: [sky, ground]\n")
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "two", "--data-root", root, "--no-progress") == 0
    sets = [
        x
        for s in (*TINY_SETS, f"data.root={root}", "data.train=two", "data.eval=['two']", "model.num_classes=2")
        for x in ("--set", s)
    ]
    assert rein("train", *sets, "--iters", 1, "--out", tmp_path / "run", "--no-progress") == 0
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert list(results["datasets"]["two"]["per_class"]) == ["sky", "ground"]


def test_hugging_face_datasets_through_the_datasets_library(tmp_path, monkeypatch):
    import sys
    import types

    rows = [
        {
            "image": Image.fromarray(np.full((16, 24, 3), i * 20, np.uint8)),
            "label": Image.fromarray(np.full((16, 24), i % 3, np.uint8)),
        }
        for i in range(4)
    ]
    module = types.ModuleType("datasets")
    module.load_dataset = lambda repo: {"train": rows[:3], "validation": rows[3:]} if repo == "org/cracks" else None
    monkeypatch.setitem(sys.modules, "datasets", module)
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", "hf://org/cracks", "--name", "hfc", "--data-root", root) == 0
    data = json.loads((root / "hfc" / "manifest.json").read_text())
    assert data["counts"] == {"train": 3, "val": 1} and data["label_space"]["classes"] == ["class_0", "class_1", "class_2"]
    _, label = load(root / "hfc" / "manifest.json", "val")[0]
    assert (label == 0).all()  # row 3: 3 % 3
