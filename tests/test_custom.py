"""Custom datasets: folders of images and masks with classes.yaml, and hf:// datasets; training on them by name."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .helpers import drop_rows, errors, read_pairs, rein, sets, truncate


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


def test_fine_tuning_on_a_custom_dataset_trains_evaluates_and_predicts_with_its_classes(tmp_path, capsys):
    colors = "[{name: sky, color: [10, 20, 250]}, {name: ground, color: [200, 120, 0]}]"
    src = fake.custom(tmp_path / "mine", {"train": 4, "val": 2}, [0, 1], f"classes: {colors}\n")
    for mask in src.rglob("masks/*/*.png"):  # colour masks, as annotation tools save them
        ids = np.asarray(Image.open(mask))
        rgb = np.zeros((*ids.shape, 3), np.uint8)
        rgb[ids == 0], rgb[ids == 1] = (10, 20, 250), (200, 120, 0)
        Image.fromarray(rgb).save(mask)
    root = tmp_path / "root"
    # an unprepared folder is named with the command that prepares it
    assert rein("train", "--data", src, *sets(f"data.root={root}"), "--iters", 1, "--out", tmp_path / "x") == 1
    assert f"rein data prepare custom --from {src} --name NAME" in errors(capsys)
    assert rein("data", "prepare", "custom", "--from", src, "--name", "two", "--data-root", root, "--no-progress") == 0
    # no model.num_classes: the head gets the dataset's two classes
    args = sets(f"data.root={root}", "data.eval=['two']")
    assert rein("train", "--data", "two", *args, "--iters", 1, "--out", tmp_path / "run", "--no-progress") == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["num_classes"] == 2
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert list(results["datasets"]["two"]["per_class"]) == ["sky", "ground"]
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["classes"] == ["sky", "ground"] and config["palette"] == [[10, 20, 250], [200, 120, 0]]
    # evaluation and prediction from the checkpoint, with its classes and palette
    capsys.readouterr()
    ev = tmp_path / "ev"
    assert rein("eval", ckpt, "-t", "two", "--data-root", root, "--mode", "whole", "--out", ev, "--no-progress") == 0
    assert "sky" in capsys.readouterr().out and (ev / "report.md").is_file()
    pred = tmp_path / "pred"
    assert rein("predict", ckpt, src / "images" / "val", "--out", pred, "--mode", "whole", "--no-progress") == 0
    labels = np.asarray(Image.open(pred / "labels" / "0.png"))
    colours = np.asarray(Image.open(pred / "color" / "0.png").convert("RGB"))
    assert set(np.unique(labels)) <= {0, 1}
    expected = np.array([[10, 20, 250], [200, 120, 0]], np.uint8)[labels]
    assert np.array_equal(colours, expected)  # the dataset's own colours
    # a checkpoint of two classes on a 19-class dataset: one message naming both
    assert rein("eval", ckpt, "-t", "synthetic", "--data-root", root, "--mode", "whole", "--out", ev / "b") == 1
    assert "19" in (err := errors(capsys)) and "2" in err


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


def custom_folder(src: Path, classes_yaml: str, n: int = 3) -> dict[str, np.ndarray]:
    """images/ + masks/ (index masks of 0, 1, 2) + classes.yaml; returns the true ids by stem."""
    (src / "images").mkdir(parents=True, exist_ok=True)
    (src / "classes.yaml").write_text(classes_yaml)
    truth = {}
    for i in range(n):
        fake.image(src / "images" / f"p{i}.jpg", seed=i)
        truth[f"p{i}"] = fake.label(src / "masks" / f"p{i}.png", [0, 1, 2], seed=i)
    return truth


def test_palette_colour_masks_are_read_by_colour(tmp_path):
    from rein_cli.data.custom import prepare_custom

    src = tmp_path / "mine"
    truth = custom_folder(
        src,
        "classes: [{name: sky, color: [0, 0, 255]}, {name: road, color: [128, 64, 128]}, "
        "{name: car, color: [255, 0, 0]}]\n",
    )
    colors = np.array([[0, 0, 255], [128, 64, 128], [255, 0, 0]], np.uint8)
    for stem, ids in truth.items():  # a drawing program's palette, in another order than the classes
        order = [2, 0, 1]  # palette index k holds the colour of class order[k]
        mask = Image.fromarray(np.argsort(order).astype(np.uint8)[ids], mode="L").convert("P")
        mask.putpalette(colors[order].ravel().tolist())
        mask.save(src / "masks" / f"{stem}.png")
        assert not np.array_equal(np.asarray(Image.open(src / "masks" / f"{stem}.png")), ids)  # indices would be wrong
    manifest = prepare_custom(src, "palette", tmp_path / "out", progress=False)
    for split in ("train", "val"):
        for image, label in read_pairs(manifest, split):
            assert np.array_equal(label, truth[image.stem]), image


def test_index_masks_without_colours_are_used_in_place(tmp_path):
    from rein_cli.data.custom import prepare_custom

    src = tmp_path / "mine"
    truth = custom_folder(src, "classes: [a, b, c]\n")
    fake.label(src / "masks" / "p1.png", [0, 1, 2], seed=1, palette=True)  # a palette PNG: its indices count
    manifest = prepare_custom(src, "index", tmp_path / "out", progress=False)
    pairs = read_pairs(manifest, "train") + read_pairs(manifest, "val")
    assert len(pairs) == 3 and not (tmp_path / "out" / "labels").exists()
    for image, label in pairs:
        assert np.array_equal(label, truth[image.stem])


@pytest.mark.parametrize(
    ("where", "spoil", "expected"),
    [
        ("masks", lambda p: p.write_bytes(b""), "mask-or-image: the file is empty \\(0 bytes\\)"),
        ("images", lambda p: p.write_bytes(b""), "mask-or-image: the file is empty \\(0 bytes\\)"),
        ("images", lambda p: p.write_text("a note, not a photo"), "mask-or-image: not a PNG, JPEG"),
        ("masks", lambda p: truncate(p, 0.5), "mask-or-image: the PNG data ends early"),
        ("masks", lambda p: drop_rows(p, 0.5), "mask-or-image is incomplete: its pixel data holds 12 of 24 rows"),
        ("images", lambda p: truncate(p, 0.5), "mask-or-image: the JPEG data ends early"),
        ("masks", lambda p: Image.new("RGB", (fake.W, fake.H)).save(p), "mask-or-image has mode RGB.*classes.yaml"),
    ],
)
def test_damaged_files_in_a_custom_folder_are_named(tmp_path, capsys, where, spoil, expected):
    src = tmp_path / "mine"
    custom_folder(src, "classes: [a, b, c]\n")
    victim = src / where / ("p1.png" if where == "masks" else "p1.jpg")
    spoil(victim)
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", root) == 1
    assert re.search(expected.replace("mask-or-image", re.escape(str(victim))), errors(capsys))
    assert not (root / "bad" / "manifest.json").exists()


def test_unknown_mask_values_name_the_mask(tmp_path, capsys):
    src = tmp_path / "mine"
    custom_folder(src, "classes: [a, b]\nignore_index: 9\n")  # masks hold 0, 1 and 2
    assert rein("data", "prepare", "custom", "--from", src, "--name", "bad", "--data-root", tmp_path / "root") == 1
    assert f"mask {src / 'masks' / 'p0.png'} holds values [2], but there are 2 classes (ignore 9)" in errors(capsys)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("classes: [a, {color: [1, 2, 3]}]", r"classes\[1\] \(None\) needs a name"),
        ("classes: [a, null]", r"classes\[1\] \(None\) needs a name"),
        ("classes: [a, b]\nignore_index: none", r"ignore_index must be an integer from 0 to 255 \(got 'none'\)"),
        ("classes: [a, b]\nignore_index: 300", r"ignore_index must be an integer from 0 to 255 \(got 300\)"),
        ("classes: [a, b]\nignore_index: 1", r"ignore_index \(1\) must be >= the number of classes \(2\)"),
        ("classes: [{name: a, color: [red, 0, 0]}]", r"classes\[0\] color is \['red', 0, 0\]; a colour is three int"),
        ("classes: [a, b]\ncolors: [[0, 0, 0], [0, 0, 256]]", r"colors\[1\] \(b\) is \[0, 0, 256\]"),
        ("classes: [a, b]\ncolors: [[0, 0, 0]]", r"'colors' must give one \[r, g, b\] per class \(2 classes\)"),
        ("classes: [{name: a, color: [0, 0, 0]}, b]", r"classes\[1\] \(b\) has no color"),
        ("classes: [a, b, a]", r"classes\[2\] repeats the name 'a' of classes\[0\]"),
        (
            "classes: [{name: a, colour: [0, 0, 0]}]",
            r'classes\[0\] has an unknown key "colour" \(did you mean "color"\?\)',
        ),
        ("classes: [a]\nignore: 255", r'unknown key "ignore" \(did you mean "ignore_index"\?\)'),
        ("classes: [a, b]\ncolors: [[1, 1, 1], [1, 1, 1]]", r"two classes have the same colour"),
        ("- a\n- b", r"must be a mapping with 'classes'"),
        ("classes: [a, b", r"is not valid YAML"),
    ],
)
def test_classes_yaml_mistakes_name_the_file_and_the_entry(tmp_path, text, expected):
    from rein_cli.data.custom import read_classes

    (tmp_path / "classes.yaml").write_text(text + "\n")
    with pytest.raises(ReinError, match=re.escape(str(tmp_path / "classes.yaml")) + ".*" + expected):
        read_classes(tmp_path / "classes.yaml")


def test_classes_yaml_forms(tmp_path):
    from rein_cli.data.custom import read_classes

    path = tmp_path / "classes.yaml"
    path.write_text("classes: [{name: sky, color: [0, 0, 255]}, {name: road, color: [9, 9, 9]}]\nignore_index: 250\n")
    assert read_classes(path) == (["sky", "road"], [[0, 0, 255], [9, 9, 9]], 250)
    path.write_text("classes: [sky, road]\n")
    assert read_classes(path) == (["sky", "road"], None, 255)


def test_preparing_again_from_a_bad_folder_keeps_the_prepared_copy(tmp_path):
    from rein_cli.data.custom import prepare_custom

    classes = "classes: [{name: sky, color: [0, 0, 0]}, {name: road, color: [1, 1, 1]}, {name: car, color: [2, 2, 2]}]"
    src = tmp_path / "mine"
    custom_folder(src, classes + "\n", n=4)
    for mask in (src / "masks").iterdir():  # colour masks: the ids as grey colours (0, 1, 2) in RGB
        Image.open(mask).convert("RGB").save(mask)
    out = tmp_path / "out"
    manifest = prepare_custom(src, "mine", out, progress=False)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    Image.fromarray(np.full((fake.H, fake.W, 3), 9, np.uint8)).save(src / "masks" / "p3.png")  # no class's colour
    with pytest.raises(ReinError, match=r"mask .*p3\.png has colours that are no class"):
        prepare_custom(src, "mine", out, progress=False)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # the manifest and every label as they were; the new labels, built aside, are gone
    assert read_pairs(manifest, "train")
