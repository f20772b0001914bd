"""Evaluation and prediction of a trained checkpoint: predicted files reproduce the evaluated mIoU."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion
from rein_cli.errors import ReinError

from .helpers import drop_rows, errors, rein, truncate


def test_eval_and_predict_agree(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    code = rein(
        "eval",
        ckpt,
        "--data",
        "synthetic-night",
        "--data",
        "synthetic",
        "--data-root",
        synthetic_root,
        "--mode",
        "whole",
        "--out",
        tmp_path / "ev",
        "--no-progress",
    )
    assert code == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert list(results["datasets"]) == ["synthetic-night", "synthetic"]
    table = capsys.readouterr().out
    assert "synthetic-night" in table and "mIoU" in table and "road" in table

    images = synthetic_root / "synthetic-night" / "images" / "val"
    assert rein("predict", ckpt, images, "--out", tmp_path / "pred", "--mode", "whole", "--no-progress") == 0
    labels = sorted((tmp_path / "pred" / "labels").glob("*.png"))
    assert len(labels) == 4
    assert len(list((tmp_path / "pred" / "color").glob("*.png"))) == 4
    assert len(list((tmp_path / "pred" / "overlay").glob("*.jpg"))) == 4
    cm = 0
    for label in labels:
        pred = np.asarray(Image.open(label))
        truth = np.asarray(Image.open(synthetic_root / "synthetic-night" / "labels" / "val" / label.name))
        assert pred.shape == truth.shape == (64, 128) and pred.max() < 19
        cm = cm + confusion_matrix(torch.from_numpy(pred.copy()), torch.from_numpy(truth.copy()), 19)
    expected = results["datasets"]["synthetic-night"]["mIoU"]
    assert iou_from_confusion(cm)["mIoU"] == pytest.approx(expected)  # predict's files reproduce eval's number


def test_predict_a_single_file_with_resize(trained, synthetic_root, tmp_path):
    image = synthetic_root / "synthetic" / "images" / "val" / "000001.jpg"
    assert (
        rein("predict", trained / "checkpoints" / "last", image, "--out", tmp_path, "--size", "64x32", "--no-progress")
        == 0
    )
    assert Image.open(tmp_path / "labels" / "000001.png").size == (128, 64)  # back at the input's resolution


def inputs_with_a_bad_last_one(synthetic_root, folder) -> list:
    """Three synthetic JPEGs copied to ``folder``; the last by name is cut short after its header."""
    folder.mkdir(parents=True)
    for i in range(3):
        shutil.copy(synthetic_root / "synthetic" / "images" / "val" / f"{i:06d}.jpg", folder / f"{i}.jpg")
    truncate(folder / "2.jpg", 0.6)
    with Image.open(folder / "2.jpg") as image:
        image.verify()  # what the old check looked at: it passes
    return sorted(folder.iterdir())


def test_a_truncated_later_input_stops_predict_before_anything_is_written(tiny_model, synthetic_root, tmp_path):
    from rein_cli.engine.predict import predict

    inputs = inputs_with_a_bad_last_one(synthetic_root, tmp_path / "in")
    with pytest.raises(ReinError, match=rf"cannot decode image {re.escape(str(inputs[2]))}: the JPEG data ends early"):
        predict(tiny_model, [tmp_path / "in"], tmp_path / "out", mode="whole", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_input_png_with_rows_missing_stops_predict(tiny_model, synthetic_root, tmp_path):
    from rein_cli.engine.predict import predict

    (tmp_path / "in").mkdir()
    for i in range(2):
        image = synthetic_root / "synthetic" / "images" / "val" / f"{i:06d}.jpg"
        Image.open(image).save(tmp_path / "in" / f"{i}.png")
    assert drop_rows(tmp_path / "in" / "1.png", 0.5) == (32, 64)
    with pytest.raises(ReinError) as err:
        predict(tiny_model, [tmp_path / "in"], tmp_path / "out", mode="whole", progress=False)
    assert str(err.value) == (
        f"image {tmp_path / 'in' / '1.png'} is incomplete: its pixel data holds 32 of 64 rows; replace it with a "
        "complete copy; nothing was written (--skip-bad segments the readable inputs)"
    )
    assert not (tmp_path / "out").exists()


def test_skip_bad_writes_the_readable_inputs_and_exits_1(trained, synthetic_root, tmp_path, capsys):
    inputs = inputs_with_a_bad_last_one(synthetic_root, tmp_path / "in")
    (tmp_path / "in" / "3.png").write_bytes(b"")
    ckpt = trained / "checkpoints" / "last"
    args = ("predict", ckpt, tmp_path / "in", "--out", tmp_path / "out", "--mode", "whole", "--no-progress")
    assert rein(*args, "--skip-bad") == 1
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["0.png", "1.png"]
    assert len(list((tmp_path / "out" / "overlay").glob("*.jpg"))) == 2
    assert not list((tmp_path / "out").rglob("*.tmp"))  # every file written whole (atomically)
    lines = errors(capsys).splitlines()
    skipped = [line for line in lines if line.startswith("skipped: ")]  # one line per unreadable input
    assert len(skipped) == 2 and str(inputs[2]) in skipped[0]
    assert f"{tmp_path / 'in' / '3.png'}: the file is empty" in skipped[1]
    assert lines[-1].startswith("error: 2 of 4 inputs could not be read and were skipped")


def test_skip_bad_as_a_library_call_raises_after_writing(tiny_model, synthetic_root, tmp_path):
    from rein_cli.engine.predict import predict

    inputs_with_a_bad_last_one(synthetic_root, tmp_path / "in")
    with pytest.raises(ReinError, match=r"1 of 3 inputs could not be read and were skipped .*the other 2 are in"):
        predict(tiny_model, [tmp_path / "in"], tmp_path / "out", mode="whole", skip_bad=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["0.png", "1.png"]


@pytest.mark.parametrize("stride", [0, -5, 10_000])
def test_a_stride_that_would_skip_pixels_is_refused_before_writing(tiny_model, synthetic_root, tmp_path, stride):
    from rein_cli.engine.predict import predict

    image = synthetic_root / "synthetic" / "images" / "val" / "000001.jpg"
    with pytest.raises(ReinError, match=rf"slide stride {stride} must be between 1 and the crop size"):
        predict(tiny_model, [image], tmp_path / "out", mode="slide", stride=stride, progress=False)
    assert not list((tmp_path / "out").rglob("*.png"))


def nested_inputs(synthetic_root, root) -> list:
    """A tree of synthetic JPEGs of two sizes: root/2.jpg, root/x/0.jpg, root/x/1.jpg, root/x/y/3.jpg (64x64)."""
    scenes = sorted((synthetic_root / "synthetic" / "images" / "val").glob("*.jpg"))
    places = [root / "x" / "0.jpg", root / "x" / "1.jpg", root / "2.jpg", root / "x" / "y" / "3.jpg"]
    for scene, place in zip(scenes, places, strict=True):
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scene, place)
    with Image.open(places[3]) as image:  # a different size: a batch of its own
        image.crop((0, 0, 64, 64)).save(places[3])
    return places


def test_predict_keeps_the_input_tree_and_reports_a_bad_file(trained, synthetic_root, tmp_path, capsys):
    nested_inputs(synthetic_root, tmp_path / "a")
    (tmp_path / "a" / "x" / "bad.png").write_bytes(b"not an image")
    ckpt = trained / "checkpoints" / "last"
    args = ("predict", ckpt, tmp_path / "a", "--out", tmp_path / "out", "--mode", "whole", "--no-progress")
    assert rein(*args) == 1  # checked first: nothing written
    assert f"{tmp_path / 'a' / 'x' / 'bad.png'}" in errors(capsys) and not (tmp_path / "out").exists()
    assert rein(*args, "--skip-bad", "--batch-size", "2") == 1
    for kind, suffix in (("labels", "png"), ("color", "png"), ("overlay", "jpg")):
        found = sorted(p.relative_to(tmp_path / "out" / kind).as_posix() for p in (tmp_path / "out" / kind).rglob("*"))
        assert [f for f in found if "." in f] == sorted(f"{n}.{suffix}" for n in ("2", "x/0", "x/1", "x/y/3"))
    assert Image.open(tmp_path / "out" / "labels" / "x" / "y" / "3.png").size == (64, 64)
    skipped = [line for line in errors(capsys).splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and "bad.png" in skipped[0]


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_batched_prediction_writes_the_same_files_as_one_at_a_time(tiny_model, synthetic_root, tmp_path, mode):
    from rein_cli.engine.predict import predict

    nested_inputs(synthetic_root, tmp_path / "in")
    outputs = {}
    for batch_size, window_batch in ((1, 1), (3, None), (3, 2)):  # one window per call; windows of 3 images batched
        out = tmp_path / f"b{batch_size}-{window_batch}"
        written = predict(
            tiny_model,
            [tmp_path / "in"],
            out,
            mode=mode,
            batch_size=batch_size,
            window_batch=window_batch,
            progress=False,
        )
        assert [p.relative_to(out).as_posix() for p in written] == [
            "labels/2.png",
            "labels/x/0.png",
            "labels/x/1.png",
            "labels/x/y/3.png",
        ]  # input order
        outputs[batch_size, window_batch] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.*"))}
    assert len(outputs[1, 1]) == 12 and outputs[1, 1] == outputs[3, None] == outputs[3, 2]


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_window_batch_below_one_is_refused_before_anything_is_read(tmp_path, capsys, value):
    assert rein("predict", tmp_path / "no-model", tmp_path / "no.png", "--window-batch", value) == 2
    err = " ".join(errors(capsys).replace("│", " ").split())  # the box's lines joined
    assert "--window-batch" in err and "greater than or equal to 1" in err


def test_evaluate_refuses_a_window_batch_below_one(tiny_model, tmp_path):
    from rein_cli.engine.evaluate import evaluate

    with pytest.raises(ReinError, match=r"^the window batch 0 must be at least 1"):
        evaluate(tiny_model, ["synthetic-fog"], data_dir=tmp_path, window_batch=0, progress=False)


def test_format_picks_what_is_written(trained, synthetic_root, tmp_path, capsys):
    nested_inputs(synthetic_root, tmp_path / "in")
    ckpt = trained / "checkpoints" / "last"
    base = ("predict", ckpt, tmp_path / "in", "--mode", "whole", "--no-progress")
    assert rein(*base, "--out", tmp_path / "o1", "--format", "label", "--format", "overlay") == 0
    assert "4 images segmented into" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["labels", "overlay"]
    assert rein(*base, "--out", tmp_path / "o2", "--format", "colour,label") == 0
    assert "(labels/, color/)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["color", "labels"]
    assert rein(*base, "--out", tmp_path / "o3", "-f", "color") == 0  # the folder's spelling is accepted too
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == ["color"]
    assert rein(*base, "--out", tmp_path / "o4", "--format", "mask") == 1
    assert '--format "mask" is unknown; choose from label, colour, overlay' in errors(capsys)
    assert not (tmp_path / "o4").exists()


@pytest.mark.parametrize("inside", ["pred", "."])
def test_predict_never_reads_its_own_outputs(trained, synthetic_root, tmp_path, capsys, inside):
    images = tmp_path / "in"
    shutil.copytree(synthetic_root / "synthetic" / "images" / "val", images)
    (images / "notes").mkdir()
    shutil.copy(images / "000001.jpg", images / "notes" / "labels.jpg")  # an input merely named like an output
    out = (images / inside).resolve() if inside == "." else images / inside
    args = ("predict", trained / "checkpoints" / "last", images, "--out", out, "--mode", "whole", "--no-progress")
    expected = sorted(["000000", "000001", "000002", "000003", "notes/labels"])
    for run in (1, 2):  # the second run finds the first one's outputs in its input folder
        assert rein(*args) == 0
        labels = sorted(p.relative_to(out / "labels").with_suffix("").as_posix() for p in out.glob("labels/**/*.png"))
        assert labels == expected, run
        assert len(list(out.glob("overlay/**/*.jpg"))) == len(expected)
        lines = [line for line in errors(capsys).splitlines() if "left out of the inputs" in line]
        if inside == ".":
            assert lines == [
                f"--out {out} is the input folder: its labels/, color/, overlay/ (predict's outputs) are left out of "
                "the inputs"
            ]
        else:
            assert lines == [f"--out {out} is inside the input folder {images}: its files are left out of the inputs"]
