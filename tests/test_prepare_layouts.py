"""`rein data prepare` on fakes of every official layout, each converted pixel checked; which folder a name gets."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.manifest import read_manifest
from rein_cli.data.prepare import prepare
from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .helpers import read_pairs

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
