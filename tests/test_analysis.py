"""Label-free estimates through the evaluation: calibration, unlabeled folders, results.json and the command line."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from rein_cli.engine.estimate import ScoreStats, estimate_on_source
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.results import read_results
from rein_cli.errors import ReinError

from .helpers import rein, tiny_segmentor


@pytest.fixture(scope="module")
def night_images(synthetic_root, tmp_path_factory):
    """The synthetic night scenes as a plain folder of images (no manifest, no labels), in a subfolder."""
    folder = tmp_path_factory.mktemp("plain") / "street"
    (folder / "cam0").mkdir(parents=True)
    for image in sorted((synthetic_root / "synthetic-night" / "images" / "val").glob("*.jpg")):
        shutil.copy(image, folder / "cam0" / image.name)
    return folder


def test_estimates_calibrated_on_the_training_data(synthetic_root, night_images, tmp_path):
    model = tiny_segmentor()
    targets = ["synthetic-fog", str(night_images)]
    out = tmp_path / "out"
    results = evaluate(
        model, targets, data_dir=synthetic_root, out=out, mode="whole", progress=False, trained_on=["synthetic"],
        estimate=True,
    )  # fmt: skip
    assert list(results.datasets) == ["synthetic-fog", "street", "synthetic"]  # the calibration set evaluated last
    assert results.calibrated_on == "synthetic" and results.datasets["synthetic"].estimates == ()
    fog, street = results.datasets["synthetic-fog"], results.datasets["street"]
    assert not street.labeled and street.images == 4 and results.mean_of == ["synthetic-fog"]
    methods = {e.method for e in fog.estimates}
    assert {"ATC-MC", "ATC-NE", "DoC", "AC", "ATC-MC per class", "DoC mIoU"} <= methods
    assert {e.method for e in street.estimates} == methods
    assert all(0 <= e.value <= 100 for e in fog.estimates if not math.isnan(e.value))
    # the calibration reproduces the source's own accuracy and per-class IoU
    stats, entry = results.image_stats["synthetic"], results.datasets["synthetic"]
    own = estimate_on_source(ScoreStats(stats.hist_labeled, np.asarray(entry.confusion)))
    assert own["ATC-MC"].value == pytest.approx(entry.aAcc, abs=1e-6)
    assert own["ATC-MC per class"].value == pytest.approx(entry.mIoU, abs=1e-6)
    # ... and its threshold is what the target's estimate used
    atc = next(e for e in fog.estimates if e.method == "ATC-MC")
    assert atc.calibration["threshold"] == pytest.approx(own["ATC-MC"].calibration["threshold"])
    written = read_results(out / "results.json")
    assert written.calibrated_on == "synthetic"
    report = (out / "report.md").read_text()
    assert "## Estimated without labels" in report and "calibrated on synthetic (val)" in report
    assert [e.method for e in written.datasets["street"].estimates] == [e.method for e in street.estimates]
    assert written.datasets["street"].estimates[0].value == pytest.approx(street.estimates[0].value)


def test_estimate_refusals(synthetic_root, night_images):
    model = tiny_segmentor()
    options = {"data_dir": synthetic_root, "mode": "whole", "progress": False}
    with pytest.raises(ReinError, match=r"names no training dataset.*--calibrate-on NAME"):
        evaluate(model, ["synthetic-fog"], estimate=True, **options)
    with pytest.raises(ReinError, match="--calibrate-on calibrates the label-free estimates: add --estimate"):
        evaluate(model, ["synthetic-fog"], calibrate_on="synthetic", **options)
    with pytest.raises(
        ReinError, match=r"cannot calibrate the estimates on street: .* is a folder of images without labels"
    ):
        evaluate(model, ["synthetic-fog"], estimate=True, calibrate_on=str(night_images), **options)
    with pytest.raises(ReinError, match=r"without a label.*--estimate"):
        evaluate(model, [str(night_images)], **options)


def test_eval_estimate_on_the_command_line(trained, synthetic_root, night_images, tmp_path, capsys):
    checkpoint = trained / "checkpoints" / "last"
    out = tmp_path / "eval"
    code = rein(
        "eval", checkpoint, "--target", "synthetic-fog", "--target", night_images, "--estimate", "--mode", "whole",
        "--data-root", synthetic_root, "--out", out, "--no-progress",
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Estimated without labels, calibrated on synthetic (val)" in printed
    block = printed[printed.index("Estimated without labels") :]
    assert "ATC-MC" in block and "measured" in block and "street" in block and "synthetic-fog" in block
    assert "calibration on synthetic: aAcc " in block and "ATC thresholds ATC-MC 0." in block
    assert "sources: Hendrycks and Gimpel, ICLR 2017; Guillory et al., ICCV 2021; Garg et al., ICLR 2022" in block
    assert "95% interval" in printed
    assert read_results(out / "results.json").calibrated_on == "synthetic"


def test_an_unlabeled_test_split_is_estimated_with_the_calibration_on_its_val_split(synthetic_root, tmp_path):
    from rein_cli.data.manifest import read_manifest, write_manifest
    from rein_cli.io import relative_path
    from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    source = read_manifest(synthetic_root / "synthetic-snow")
    folder = tmp_path / "snowy"
    items = [{"image": relative_path(source.root / item["image"], folder)} for item in source.splits["val"]]
    write_manifest(
        folder, dataset="snowy", classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, splits={"test": items}
    )
    results = evaluate(
        tiny_segmentor(), [str(folder)], data_dir=synthetic_root, split="test", mode="whole", progress=False,
        trained_on=["synthetic"], estimate=True, out=tmp_path / "out",
    )  # fmt: skip
    assert list(results.datasets) == ["snowy", "synthetic (val)"] and results.calibrated_on == "synthetic (val)"
    assert not results.datasets["snowy"].labeled and results.datasets["synthetic (val)"].labeled
    assert {e.method for e in results.datasets["snowy"].estimates} >= {"ATC-MC", "AC per class"}
    assert read_results(tmp_path / "out" / "results.json").calibrated_on == "synthetic (val)"
    with pytest.raises(ReinError, match="--estimate estimates clean targets"):
        evaluate(tiny_segmentor(), ["synthetic-fog"], data_dir=synthetic_root, estimate=True, corruption="fog:1",
                 trained_on=["synthetic"])  # fmt: skip


def test_the_resamples_and_the_worst_images_are_the_users_to_choose(trained, synthetic_root, tmp_path):
    out = tmp_path / "eval"
    common = ("--mode", "whole", "--data-root", synthetic_root, "--out", out, "--no-progress")
    assert (
        rein(
            "eval", trained / "checkpoints" / "last", "-t", "synthetic-fog", *common, "--resamples", "0", "--worst", "2"
        )
        == 0
    )
    written = read_results(out / "results.json")
    entry = written.datasets["synthetic-fog"]
    assert entry.interval is None and written.mean_interval is None and len(entry.worst) == 2
    assert rein("eval", trained / "checkpoints" / "last", "-t", "synthetic-fog", *common, "--resamples", "200") == 0
    entry = read_results(out / "results.json").datasets["synthetic-fog"]
    assert entry.interval.resamples == 200 and len(entry.worst) == 4  # every one of its 4 images: fewer than 8
