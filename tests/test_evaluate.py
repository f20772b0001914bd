"""Evaluation at paper scale: the official numbers from a slow reference, the DG-mean rule, the report files,
sharded evaluation, benchmark-server predictions and flip test-time augmentation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rein_cli.data.manifest import read_manifest, write_manifest
from rein_cli.data.registry import canonical, canonical_list, overlaps
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.imagestats import read_image_stats
from rein_cli.engine.inference import infer
from rein_cli.engine.results import DatasetResult, Evaluation
from rein_cli.engine.scoring import prediction_names
from rein_cli.engine.sources import checkpoint_facts
from rein_cli.engine.summary import add_mean
from rein_cli.errors import ReinError
from rein_cli.io import relative_path
from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_IDS, CITYSCAPES_PALETTE, LABEL_FORMATS

from .helpers import drop_rows, errors, odd_folder, rein, shard_worker, tiny_segmentor
from .test_inference import slide_reference

TARGETS = ["synthetic", "synthetic-fog", "synthetic-night"]


def reference(model, manifest_dir: Path, num_classes: int = 19) -> tuple[float, np.ndarray]:
    """The protocol from its definition: per image, the prediction at the label's resolution and the four
    histograms (intersection, union, prediction area, label area) over the non-255 pixels; summed over the images;
    IoU = I / U, NaN where U = 0 and left out; mIoU in percent rounded to two decimals."""
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    mean = torch.tensor(model.mean).view(3, 1, 1)
    std = torch.tensor(model.std).view(3, 1, 1)
    inter, union, pred_area, label_area = (np.zeros(num_classes, np.int64) for _ in range(4))
    for item in manifest["splits"]["val"]:
        rgb = np.asarray(Image.open(manifest_dir / item["image"]).convert("RGB"))
        gt = np.asarray(Image.open(manifest_dir / item["label"]))
        x = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        with torch.no_grad():
            scores = model.semantic_scores(x[None])
        scores = torch.nn.functional.interpolate(scores, size=gt.shape, mode="bilinear", align_corners=False)
        pred = scores.argmax(1)[0].numpy()
        keep = gt != 255
        p, g = pred[keep], gt[keep]
        i = np.bincount(p[p == g], minlength=num_classes)
        a_p, a_l = np.bincount(p, minlength=num_classes), np.bincount(g, minlength=num_classes)
        inter, pred_area, label_area = inter + i, pred_area + a_p, label_area + a_l
        union += a_p + a_l - i
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return round(float(np.nanmean(iou)) * 100, 2), inter


def test_numbers_match_a_slow_reference_and_the_mean_leaves_the_source_out(synthetic_root, tmp_path):
    model = tiny_segmentor()
    results = evaluate(
        model, TARGETS, out=tmp_path, data_dir=synthetic_root, mode="whole", progress=False, trained_on=["synthetic"]
    )
    rounded = {}
    for name in TARGETS:
        ours = results.datasets[name]
        ref_miou, ref_inter = reference(model, synthetic_root / name)
        assert round(ours.mIoU, 2) == ref_miou
        assert np.array_equal(np.diag(np.asarray(ours.confusion)), ref_inter)
        rounded[name] = ref_miou
    assert results.mean_of == ["synthetic-fog", "synthetic-night"]
    assert results.mean_mIoU == (rounded["synthetic-fog"] + rounded["synthetic-night"]) / 2
    assert results.datasets["synthetic"].trained_on and not results.datasets["synthetic-fog"].trained_on


def test_dg_mean_rule_names_and_subsets():
    # Cityscapes -> ACDC: the conditions, Cityscapes left out; the rounded values averaged (rein-facts §8).
    results = Evaluation()
    for name, miou in {"cityscapes": 70.0, "acdc-fog": 51.494, "acdc-night": 49.506, "acdc-rain": 55.554}.items():
        results.datasets[name] = DatasetResult(1, mIoU=miou, mAcc=1.0, aAcc=1.0, trained_on=name == "cityscapes")
    add_mean(results)
    assert results.mean_of == ["acdc-fog", "acdc-night", "acdc-rain"]
    assert results.mean_mIoU == (51.49 + 49.51 + 55.55) / 3
    assert "cityscapes" in results.mean_note
    for entry in results.datasets.values():  # all training datasets: the mean is over all of them, and says so
        entry.trained_on = True
    add_mean(results)
    assert len(results.mean_of) == 4 and "every evaluated dataset is a training dataset" in results.mean_note
    assert canonical("citys") == canonical("Cityscapes") == "cityscapes"
    assert canonical_list("gta5 + synthia") == ["gta5", "synthia"]
    assert canonical_list("urbansyn+gta5+synthia+cityscapes-1/16")[-1] == "cityscapes"
    assert overlaps("citys", ["cityscapes"]) and not overlaps("bdd", ["cityscapes"])
    assert overlaps("acdc-fog", ["acdc"]) and overlaps("acdc", ["acdc-night"])
    assert not overlaps("synthetic-fog", ["synthetic"])


def test_checkpoint_supplies_training_datasets_and_reported_figures(trained, synthetic_root, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained / "checkpoints" / "last", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["training_datasets"] == ["synthetic"]
    out = tmp_path / "ev"
    folder = synthetic_root / "synthetic"  # a prepared folder counts by its manifest's dataset name
    results = evaluate(
        ckpt, [str(folder), "synthetic-fog"], out=out, data_dir=synthetic_root, mode="whole", progress=False
    )
    assert results.mean_of == ["synthetic-fog"] and results.trained_on == ["synthetic"]
    assert results.mean_mIoU == round(results.datasets["synthetic-fog"].mIoU, 2)
    written = json.loads((out / "results.json").read_text())
    assert Evaluation.from_json(written).to_json() == written  # every key read back and written again as it was
    assert written["schema"] == 2 and written["method"] == "rein" and written["backbone"] == "vit-tiny"
    assert written["trainable_parameters"] > 0 and written["mean_of"] == ["synthetic-fog"]
    assert {"mIoU", "mAcc", "aAcc", "images", "per_class", "reported"} <= set(written["datasets"]["synthetic-fog"])
    report = (out / "report.md").read_text()
    assert "| synthetic | 4 |" in report and "no (trained on it)" in report and "DG mean mIoU" in report
    for name in ("synthetic", "synthetic-fog"):
        for chart in ("iou", "confusion"):
            assert Image.open(out / "plots" / f"{name}-{chart}.png").size[0] > 300
    assert not list(out.rglob("*.tmp"))
    # An older checkpoint (only the trained_on string) and a recipe's reported figures in config.json.
    del config["training_datasets"]
    config["trained_on"] = "synthetic + gta5"
    config["reported"] = {"synthetic-fog": [{"mIoU": 41.5, "split": "val", "source": "paper Table 9"}]}
    (ckpt / "config.json").write_text(json.dumps(config))
    assert checkpoint_facts(ckpt)[0] == ["synthetic", "gta5"]
    assert (
        rein(
            "eval",
            ckpt,
            "-t",
            "synthetic,synthetic-fog",
            "--data-root",
            synthetic_root,
            "--mode",
            "whole",
            "--out",
            out,
            "--no-progress",
        )
        == 0
    )
    entry = json.loads((out / "results.json").read_text())["datasets"]["synthetic-fog"]
    assert entry["reported"] == [{"mIoU": 41.5, "split": "val", "source": "paper Table 9"}]
    assert "41.5 (val, paper Table 9)" in (out / "report.md").read_text()
    # Only training datasets: the mean is over all of them.
    alone = evaluate(ckpt, ["synthetic"], data_dir=synthetic_root, mode="whole", progress=False)
    assert alone.mean_of == ["synthetic"] and "every evaluated dataset" in alone.mean_note


def test_two_processes_evaluate_each_image_once_and_equal_one(synthetic_root, tmp_path):
    import torch.multiprocessing as mp

    folder = odd_folder(synthetic_root, tmp_path / "odd")
    single = evaluate(tiny_segmentor(), [str(folder)], data_dir=synthetic_root, mode="whole", progress=False)
    out = tmp_path / "sharded"
    options = {"save_predictions": str(out / "pred")}
    args = (2, str(tmp_path / "rendezvous"), str(folder), str(synthetic_root), str(out), options)
    mp.spawn(shard_worker, args=args, nprocs=2, join=True)
    for rank in (0, 1):  # every process holds the summed matrix
        assert json.loads((out / f"rank{rank}.json").read_text())["odd"] == single.datasets["odd"].confusion
    written = json.loads((out / "results.json").read_text())  # rank 0 wrote the files
    assert written["datasets"]["odd"]["confusion"] == single.datasets["odd"].confusion
    assert written["datasets"]["odd"]["images"] == 5 and np.asarray(single.datasets["odd"].confusion).sum() > 0
    assert len(list((out / "pred" / "odd").rglob("*.png"))) == 5  # each image once, from one rank or the other
    sharded, one = read_image_stats(out / "images.npz")["odd"], single.image_stats["odd"]  # each image recorded once
    assert sharded.images == one.images and np.allclose(sharded.confidence, one.confidence, rtol=1e-6)
    for name in ("intersect", "label_area", "pred_area"):
        assert np.array_equal(getattr(sharded, name), getattr(one, name))
    for name in one.hist:
        assert np.array_equal(sharded.hist[name], one.hist[name])
        assert np.array_equal(sharded.hist_labeled[name], one.hist_labeled[name])


def test_flip_averages_the_image_and_its_mirror(synthetic_root):
    model = tiny_segmentor()
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 112)
    with torch.no_grad():
        whole = (model.semantic_scores(image) + model.semantic_scores(image.flip(-1)).flip(-1)) / 2
        slide = (slide_reference(model, image, 64, 40) + slide_reference(model, image.flip(-1), 64, 40).flip(-1)) / 2
    assert torch.allclose(infer(model, image, mode="whole", crop=64, flip=True), whole, atol=1e-6)
    assert torch.allclose(infer(model, image, mode="slide", crop=64, stride=40, flip=True), slide, atol=1e-6)
    assert not torch.allclose(infer(model, image, mode="whole", crop=64), whole, atol=1e-4)
    plain = evaluate(model, ["synthetic-fog"], data_dir=synthetic_root, mode="whole", progress=False)
    flipped = evaluate(model, ["synthetic-fog"], data_dir=synthetic_root, mode="whole", flip=True, progress=False)
    assert flipped.flip and not plain.flip
    assert flipped.datasets["synthetic-fog"].confusion != plain.datasets["synthetic-fog"].confusion


CITY_TEST = [
    "berlin/berlin_000000_000019_leftImg8bit.png",
    "bonn/bonn_000001_000019_leftImg8bit.png",
    "bonn/bonn_000002_000019_leftImg8bit.png",
]


def folder_with_a_test_split(synthetic_root: Path, folder: Path) -> Path:
    """A prepared Cityscapes-like folder with a labeled val split and a test split of images without labels."""
    source = read_manifest(synthetic_root / "synthetic")
    test = []
    for k, name in enumerate(CITY_TEST):
        path = folder / "leftImg8bit" / "test" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source.root / source.splits["val"][k]["image"]).save(path)
        test.append({"image": relative_path(path, folder)})
    val = [{k: relative_path(source.root / v, folder) for k, v in item.items()} for item in source.splits["val"]]
    splits = {"val": val, "test": test}
    write_manifest(folder, dataset="citytest", classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, splits=splits)
    return folder


def test_test_split_predictions_round_trip_to_the_models_train_ids(trained, synthetic_root, tmp_path, capsys):
    from rein_cli.data.transforms import EvalTransform
    from rein_cli.engine.checkpoint import load_segmentor

    ckpt = trained / "checkpoints" / "last"
    folder = folder_with_a_test_split(synthetic_root, tmp_path / "citytest")
    pred = tmp_path / "submit"
    common = ["--data-root", synthetic_root, "--mode", "whole", "--no-progress", "--out", tmp_path / "ev"]
    assert rein("eval", ckpt, "-t", folder, "--split", "test", "--save-predictions", pred, *common) == 0
    model = load_segmentor(ckpt)
    table = LABEL_FORMATS["cityscapes-ids"].table  # label id -> train id, the preparation's table
    for name in CITY_TEST:
        written = np.asarray(Image.open(pred / "citytest" / name))  # mirrors the image's path, the image's name
        assert set(np.unique(written)) <= set(CITYSCAPES_IDS)  # label ids, what the Cityscapes server reads
        rgb = torch.from_numpy(np.asarray(Image.open(folder / "leftImg8bit" / "test" / name).convert("RGB")).copy())
        image, _ = EvalTransform(model.mean, model.std)(rgb, None)
        expected = infer(model, image[None], mode="whole", crop=model.crop_size).argmax(1)[0].numpy()
        assert np.array_equal(table[written], expected)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert (
        results["datasets"]["citytest"]["prediction_ids"] == "label-ids"
        and "mIoU" not in results["datasets"]["citytest"]
    )
    capsys.readouterr()
    # Metrics on a split without labels, a split preparation does not keep, an unknown split: clear errors.
    assert rein("eval", ckpt, "-t", folder, "--split", "test", *common) == 1
    assert "metrics need labels" in (err := errors(capsys)) and "--save-predictions" in err
    assert rein("eval", ckpt, "-t", "synthetic-fog", "--split", "test", "--save-predictions", pred, *common) == 1
    assert "has no test split (its splits: val)" in errors(capsys)
    assert rein("eval", ckpt, "-t", "synthetic-fog", "--split", "vall", *common) == 1
    assert 'no split "vall"' in (err := errors(capsys)) and 'did you mean "val"' in err
    # Train ids on request, and predictions beside metrics on a labeled split.
    assert rein("eval", ckpt, "-t", folder, "--save-predictions", pred, "--prediction-ids", "train-ids", *common) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())["datasets"]["citytest"]
    assert results["prediction_ids"] == "train-ids" and "mIoU" in results
    assert len(list((pred / "citytest").glob("*.png"))) == 4


def test_prediction_names_mirror_the_images_below_their_common_folder():
    paths = ["/d/rgb_anon/fog/test/GOPR1/a_rgb_anon.png", "/d/rgb_anon/night/test/GOPR2/b_rgb_anon.png"]
    assert [str(p) for p in prediction_names(paths)] == [
        "fog/test/GOPR1/a_rgb_anon.png",
        "night/test/GOPR2/b_rgb_anon.png",
    ]
    assert [str(p) for p in prediction_names(["/x/img.jpg"])] == ["img.png"]


def test_bad_inputs_name_the_fix(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    source = read_manifest(synthetic_root / "synthetic")
    folder = tmp_path / "three"
    items = [{k: relative_path(source.root / v, folder) for k, v in item.items()} for item in source.splits["val"]]
    write_manifest(folder, dataset="three", classes=["a", "b", "c"], palette=[[0, 0, 0]] * 3, splits={"val": items})
    with pytest.raises(ReinError, match=r"predicts 19 classes .* dataset three .* has 3 .*rein train --data three"):
        evaluate(ckpt, [str(folder)], data_dir=synthetic_root, mode="whole", progress=False)
    assert rein("eval", ckpt, "-t", "cityscapes", "--data-root", tmp_path / "empty", "--no-progress") == 1
    empty = tmp_path / "empty"  # the remedy prepares it where this evaluation looks
    assert f"`rein data prepare cityscapes --from ... --data-root {empty}`" in errors(capsys)
    with pytest.raises(ReinError, match=r"missing before evaluation can start: the dataset acdc-fog: prepare it with "):
        evaluate(ckpt, ["acdc-fog"], data_dir=tmp_path / "empty", progress=False)


def test_a_label_with_rows_missing_stops_the_evaluation(trained, synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synthetic", root / "synthetic")
    label = root / "synthetic" / read_manifest(root / "synthetic").splits["val"][1]["label"]
    whole = label.read_bytes()
    assert drop_rows(label, 0.5) == (32, 64)  # Pillow alone reads the lower half as class 0 (road)
    args = ("eval", trained / "checkpoints" / "last", "-t", "synthetic", "--data-root", root, "--mode", "whole")
    assert rein(*args, "--out", tmp_path / "ev", "--no-progress") == 1
    assert errors(capsys).splitlines()[-1] == (
        f"error: label {label} is incomplete: its pixel data holds 32 of 64 rows; replace it with a complete copy"
    )
    assert not (tmp_path / "ev" / "results.json").exists()
    label.write_bytes(whole)  # a complete copy
    assert rein(*args, "--out", tmp_path / "ev", "--no-progress") == 0


def test_a_runs_checkpoint_is_evaluated_as_its_run_evaluates(trained, synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "last"
    own = (run / "eval" / "results.json").read_bytes()  # the run's own evaluation, in whole mode (TINY_SETS)
    assert rein("eval", ckpt, "--no-progress") == 0
    captured = capsys.readouterr()
    line = (
        f"evaluating {ckpt} as its run evaluates ({run / 'config.yaml'}): --mode whole --no-flip --target "
        f"synthetic-fog --data-root {synthetic_root}; give another value to change one"
    )
    assert line in captured.err.splitlines()
    assert f"results: {run / 'eval-last' / 'results.json'}" in captured.out
    assert (run / "eval" / "results.json").read_bytes() == own  # never overwritten
    ours, theirs = (json.loads((run / name / "results.json").read_text()) for name in ("eval-last", "eval"))
    assert ours["mode"] == theirs["mode"] == "whole" and list(ours["datasets"]) == ["synthetic-fog"]
    assert ours["datasets"]["synthetic-fog"]["mIoU"] == pytest.approx(theirs["datasets"]["synthetic-fog"]["mIoU"])
    given = ["--mode", "slide", "-t", "synthetic", "--flip", "--data-root", synthetic_root, "--no-progress"]
    assert rein("eval", ckpt, *given) == 0  # what is given wins; all is given: no line
    assert "as its run evaluates" not in capsys.readouterr().err
    slide = json.loads((run / "eval-last" / "results.json").read_text())
    assert slide["mode"] == "slide" and slide["flip"] is True and list(slide["datasets"]) == ["synthetic"]
    assert (run / "eval" / "results.json").read_bytes() == own
    results = evaluate(ckpt, [], progress=False)  # in Python too
    assert results.mode == "whole" and list(results.datasets) == ["synthetic-fog"]
    (run / "config.yaml").write_text("model:\n  backbonee: vit-tiny\n")  # a run's settings that cannot be read
    assert rein("eval", ckpt, "-t", "synthetic-fog", "--data-root", synthetic_root, "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"not evaluating as the run {run} does: " in err and "the defaults instead" in err
    assert json.loads((run / "eval-last" / "results.json").read_text())["mode"] == "slide"  # the checkpoint's own


def test_a_runs_precision_and_window_batch_are_taken_where_it_set_them(trained, synthetic_root, tmp_path, capsys):
    import yaml

    from rein_cli.engine.inference import infer_stream
    from rein_cli.engine.precision import inference_precision

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    settings = yaml.safe_load((run / "config.yaml").read_text())
    settings["eval"] |= {"precision": "bf16", "window_batch": 3}
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    ckpt = run / "checkpoints" / "last"
    batches = []

    def spy(*args, **kwargs):
        batches.append(kwargs.get("window_batch"))
        return infer_stream(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rein_cli.engine.scoring.infer_stream", spy)
        assert rein("eval", ckpt, "--mode", "slide", "--no-progress") == 0
        line = next(x for x in capsys.readouterr().err.splitlines() if "as its run evaluates" in x)
        assert ": --no-flip --precision bf16 --window-batch 3 --target synthetic-fog --data-root " in line
        recorded = json.loads((run / "eval-last" / "results.json").read_text())["precision"]
        assert recorded == inference_precision("bf16", torch.device("cpu")).name and set(batches) == {3}
        batches.clear()
        assert rein("eval", ckpt, "--precision", "fp32", "--window-batch", "1", "--no-progress") == 0  # given wins
        line = next(x for x in capsys.readouterr().err.splitlines() if "as its run evaluates" in x)
        assert "--precision" not in line and "--window-batch" not in line
        assert json.loads((run / "eval-last" / "results.json").read_text())["precision"] == "fp32"
        assert set(batches) == {1}


def test_the_cpu_estimate_counts_what_the_evaluation_runs(synthetic_root):
    from rein_cli.engine.scoring import REPORT_SECONDS, REPORT_SECONDS_PER_ENTRY, cpu_estimate
    from rein_cli.progress import duration

    model = tiny_segmentor()  # crop 64; the synthetic scenes here are 128x64: 3 windows of 64x64 each (stride 43)
    fog = [(read_manifest(synthetic_root / "synthetic-fog"), True)]
    settings = dict(split="val", stride=43, pairs=[None])
    slide = cpu_estimate(model, fog, mode="slide", flip=False, **settings)
    assert (slide.images, slide.passes) == (4, 12) and "12 windows of up to 64x64 at " in str(slide)
    flipped = cpu_estimate(model, fog, mode="slide", flip=True, **settings)
    assert flipped.passes == 24  # each window again, mirrored
    whole = cpu_estimate(model, fog, mode="whole", flip=False, **settings)
    assert (whole.images, whole.passes) == (4, 4) and "4 whole images at " in str(whole)
    both = cpu_estimate(model, fog, mode="whole", flip=False, **settings | {"pairs": [None, ("fog", 1)]})
    assert (both.images, both.passes) == (8, 8)  # every image once per corruption pair
    for estimate, entries in ((slide, 1), (flipped, 1), (whole, 1), (both, 2)):  # images, model calls, the report
        parts = estimate.images * estimate.per_image + estimate.passes * estimate.per_pass  # one window size
        report = REPORT_SECONDS + entries * REPORT_SECONDS_PER_ENTRY
        assert estimate.per_pass > 0 and estimate.seconds == pytest.approx(parts + report)
        assert str(estimate).startswith(f"on the CPU this takes about {duration(estimate.seconds)} (")


@pytest.mark.parametrize("window_batch", [None, 3])
def test_the_cpu_estimate_times_windows_in_the_batches_the_evaluation_runs(synthetic_root, window_batch):
    from rein_cli.engine.inference import CPU_WINDOW_BATCH
    from rein_cli.engine.scoring import cpu_estimate

    model, seen = tiny_segmentor(), []
    score = model.semantic_scores
    model.semantic_scores = lambda image: seen.append(image.shape[0]) or score(image)
    fog = [(read_manifest(synthetic_root / "synthetic-fog"), True)]
    settings = dict(split="val", mode="slide", stride=43, flip=False, pairs=[None])
    estimate = cpu_estimate(model, fog, window_batch=window_batch, **settings)
    assert seen and set(seen) == {window_batch or CPU_WINDOW_BATCH}  # a call on a batch, divided per window
    assert estimate.passes == 12  # still counted per window


def test_the_estimate_comes_after_every_check(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    odd = odd_folder(synthetic_root, tmp_path / "odd")
    args = ["--data-root", synthetic_root, "--out", tmp_path / "e", "--no-progress"]
    assert rein("eval", ckpt, "-t", odd, *args) == 0
    assert "on the CPU this takes about " in capsys.readouterr().err  # a CPU evaluation says what it will take
    source = read_manifest(synthetic_root / "synthetic")
    folder = tmp_path / "three"
    items = [{k: relative_path(source.root / v, folder) for k, v in item.items()} for item in source.splits["val"]]
    write_manifest(folder, dataset="three", classes=["a", "b", "c"], palette=[[0, 0, 0]] * 3, splits={"val": items})
    assert rein("eval", ckpt, "-t", folder, *args) == 1
    err = errors(capsys)
    assert "has 3 (a, b, c, ...)" in err and "on the CPU this takes" not in err  # refused: no estimate first
