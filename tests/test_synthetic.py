"""The embedded benchmark: determinism, label/image alignment, shared labels across conditions, classes, errors."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.labels import TRAIN_ID
from rein_cli.data.scenes import make_scene
from rein_cli.data.synthetic import generate_synthetic
from rein_cli.data.weather import CONDITIONS, render
from rein_cli.errors import ReinError


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.*"))
            if p.name != "manifest.json"}  # fmt: skip


def test_layout_and_manifests(synthetic_root):
    names = {p.name for p in synthetic_root.iterdir()}
    assert names == {"synthetic", "synthetic-fog", "synthetic-night", "synthetic-rain", "synthetic-snow"}
    clear = json.loads((synthetic_root / "synthetic" / "manifest.json").read_text())
    assert clear["counts"] == {"train": 8, "val": 4}
    assert clear["label_space"]["classes"][0] == "road" and len(clear["label_space"]["classes"]) == 19
    assert clear["splits"]["val"][0] == {"image": "images/val/000000.jpg", "label": "labels/val/000000.png"}
    fog = json.loads((synthetic_root / "synthetic-fog" / "manifest.json").read_text())
    assert fog["counts"] == {"val": 4} and fog["source"]["condition"] == "fog"
    for split in clear["splits"].values():
        for item in split:
            image = Image.open(synthetic_root / "synthetic" / item["image"])
            label = Image.open(synthetic_root / "synthetic" / item["label"])
            assert image.size == label.size == (128, 64) and label.mode == "L"
    assert not list(synthetic_root.glob(".synthetic-*"))  # no temporary folder left


def test_targets_share_the_clear_labels_and_differ_in_appearance(synthetic_root):
    clear = synthetic_root / "synthetic"

    def load(folder):  # the 4 val images side by side
        return np.concatenate([np.asarray(Image.open(folder / f"images/val/{i:06d}.jpg"), dtype=np.float32) for i in range(4)], 1)

    base = load(clear)
    for condition in CONDITIONS[1:]:
        folder = synthetic_root / f"synthetic-{condition}"
        for i in range(4):
            assert (folder / f"labels/val/{i:06d}.png").read_bytes() == (clear / f"labels/val/{i:06d}.png").read_bytes()
        image = load(folder)
        assert np.abs(image - base).mean() > 8, condition
        if condition == "night":
            assert image.mean() < 0.6 * base.mean()  # dark
        if condition == "fog":
            assert image.std() < base.std()  # less contrast


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate_synthetic(tmp_path / "a", num_train=3, num_val=2, width=128, height=64, workers=1, progress=False)
    b = generate_synthetic(tmp_path / "b", num_train=3, num_val=2, width=128, height=64, workers=2, progress=False)
    for name in a:
        assert digest(a[name].parent) == digest(b[name].parent)
    c = generate_synthetic(tmp_path / "c", num_train=3, num_val=2, width=128, height=64, seed=1, workers=1, progress=False)
    assert digest(c["synthetic"].parent) != digest(a["synthetic"].parent)


def edge_strength(image: np.ndarray, label: np.ndarray, dy: int = 0, dx: int = 0) -> float:
    """Mean image gradient on the boundaries of ``label`` shifted by (dy, dx), relative to everywhere."""
    label = np.roll(label, (dy, dx), axis=(0, 1))
    grad = np.abs(np.diff(image.mean(-1), axis=1))
    boundary = label[:, 1:] != label[:, :-1]
    return float(grad[boundary].mean() / grad.mean())


def test_labels_are_aligned_with_the_image():
    ratios, shifted = [], []
    for seed in range(4):
        scene = make_scene(np.random.default_rng(seed), 256, 128)
        image = render(scene, "clear", np.random.default_rng(0)).astype(np.float32)
        ratios.append(edge_strength(image, scene.labels))
        shifted.append(edge_strength(image, scene.labels, dx=3))
    assert min(ratios) > 2.0  # label boundaries sit on strong image edges
    assert np.mean(ratios) > 1.5 * np.mean(shifted)  # and a 3-pixel misalignment loses them


def test_scenes_contain_the_street_classes():
    seen = np.zeros(256, dtype=bool)
    for seed in range(12):
        seen[np.unique(make_scene(np.random.default_rng(seed), 512, 256).labels)] = True
    for name in ("road", "sidewalk", "building", "pole", "vegetation", "terrain", "sky", "person", "car"):
        assert seen[TRAIN_ID[name]], name
    for group in (("wall", "fence"), ("traffic light", "traffic sign"), ("truck", "bus"), ("bicycle", "motorcycle")):
        assert any(seen[TRAIN_ID[n]] for n in group), group
    assert not seen[19:255].any()  # only train ids


def test_dataset_reads_the_manifest(synthetic_root):
    data = SegmentationDataset(synthetic_root / "synthetic-night", "val")
    item = data[1]
    assert item["image"].shape == (64, 128, 3) and item["label"].shape == (64, 128)
    with pytest.raises(ReinError, match='no split "train"'):
        SegmentationDataset(synthetic_root / "synthetic-night", "train")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"width": 100}, "multiple of 16"), ({"conditions": ["hail"]}, 'unknown condition "hail"'), ({"num_val": 0}, "num_val")],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ReinError, match=message):
        generate_synthetic(tmp_path, **{"num_train": 1, "num_val": 1, "progress": False, **kwargs})
    assert not any(tmp_path.iterdir())
