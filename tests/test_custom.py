"""Custom datasets: folders of images and masks with classes.yaml, and hf:// datasets; training on them by name."""

import json

import numpy as np
from PIL import Image

from . import fake_datasets as fake
from .helpers import read_pairs, rein, sets


def test_custom_folders(tmp_path, capsys):
    src = tmp_path / "mine"
    colors = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    (src / "classes.yaml").write_text(
        "classes: [background, crack, moss]\ncolors: [[0, 0, 0], [255, 0, 0], [0, 255, 0]]\n"
    )
    truth = {}
    for i in range(12):
        fake.image(src / "images" / f"p{i:02d}.jpg", seed=i)
        ids = fake.label(tmp_path / "tmp.png", [0, 1, 2], seed=i)
        truth[f"p{i:02d}"] = ids
        Image.fromarray(np.asarray(colors, np.uint8)[ids]).save(src / "masks" / f"p{i:02d}.png")  # colour masks
    root = tmp_path / "root"
    assert (
        rein("data", "prepare", "custom", "--from", src, "--name", "cracks", "--data-root", root, "--no-progress") == 0
    )
    data = json.loads((root / "cracks" / "manifest.json").read_text())
    assert data["counts"] == {"train": 11, "val": 1} and data["label_space"]["classes"] == [
        "background",
        "crack",
        "moss",
    ]
    for image, label in read_pairs(root / "cracks" / "manifest.json", "train"):
        assert np.array_equal(label, truth[image.stem])
    Image.fromarray(np.full((fake.H, fake.W, 3), 7, np.uint8)).save(src / "masks" / "p03.png")
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", root) == 1
    assert "p03.png has colours that are no class in classes.yaml: [(7, 7, 7)]" in capsys.readouterr().err
    (src / "classes.yaml").unlink()
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", root) == 1
    assert "classes.yaml is missing" in capsys.readouterr().err


def test_train_on_a_custom_dataset_by_name(tmp_path):
    src = tmp_path / "mine"
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            fake.image(src / "images" / split / f"{i}.png", seed=i, size=(64, 64))
            fake.label(src / "masks" / split / f"{i}.png", [0, 1, 255], seed=i, size=(64, 64))
    (src / "classes.yaml").write_text("classes: [sky, ground]\n")
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "two", "--data-root", root, "--no-progress") == 0
    args = sets(f"data.root={root}", "data.train=two", "data.eval=['two']", "model.num_classes=2")
    assert rein("train", *args, "--iters", 1, "--out", tmp_path / "run", "--no-progress") == 0
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
    assert data["counts"] == {"train": 3, "val": 1} and data["label_space"]["classes"] == [
        "class_0",
        "class_1",
        "class_2",
    ]
    _, label = read_pairs(root / "hfc" / "manifest.json", "val")[0]
    assert (label == 0).all()  # row 3: 3 % 3
