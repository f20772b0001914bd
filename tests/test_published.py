"""Published figures as published (``60.0`` stays ``60.0``) wherever they are shown, the Table 5 figures labelled
with the checkpoint they came from, and the settings rein assumed for a release said beside its result."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from rein_cli.config import Published, Reported, load_config
from rein_cli.engine.compare import compare
from rein_cli.engine.compare_report import format_csv, format_text
from rein_cli.engine.convert import convert_official_checkpoint, to_official
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.report import format_comparison, format_markdown, format_table
from rein_cli.engine.results import DatasetResult, Evaluation, read_results
from rein_cli.engine.sources import ModelSource
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor
from rein_cli.zoo.releases import RELEASES, Release, Setting
from rein_cli.zoo.resolve import model_sources

from .helpers import VIT, rein

# ---- the published number


def test_a_published_figure_keeps_its_digits():
    assert Published(60.0).text == "60.0" and f"{Published(60.0)}" == "60.0" and Published(60.0) == 60
    assert Published(77.56).text == "77.56" and Published(60).text == "60" and Published(" 65.30 ").text == "65.30"
    assert f"{Published('65.30'):.2f}" == "65.30" and round(Published(66.66), 1) == 66.7  # still a number
    assert json.dumps({"mIoU": Published(60.0)}) == '{"mIoU": 60.0}'
    for twin in (copy.deepcopy(Published("65.30", "x")), pickle.loads(pickle.dumps(Published("65.30", "x")))):
        assert (twin.text, twin.note, twin.shown) == ("65.30", "x", "65.30*")
    for bad in ("sixty", "nan", True, None, [60]):
        with pytest.raises(ValueError):
            Published(bad)


def test_a_figure_survives_json_with_its_digits_and_its_checkpoint():
    figure = Reported("65.30", "val", "a paper", "another model")
    data = json.loads(json.dumps(figure.to_json()))
    assert data == {
        "mIoU": 65.3,
        "split": "val",
        "source": "a paper",
        "published": "65.30",
        "checkpoint": "another model",
    }
    again = Reported.from_json(data)
    assert again == figure and again.mIoU.text == "65.30" and again.label == "a paper; measured on another model"
    plain = Reported(60.0, "val", "README 2024")
    assert plain.to_json() == {"mIoU": 60.0, "split": "val", "source": "README 2024"}  # results.json as before
    assert Reported.from_json(json.loads(json.dumps(plain.to_json()))).mIoU.text == "60.0"


def test_a_recipe_may_give_a_figure_as_text_to_keep_a_trailing_zero(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        "base: gta-dinov2-l\nreported:\n  cityscapes:\n"
        '    - {mIoU: "65.30", split: val, source: "a paper", checkpoint: "the authors\' model"}\n'
    )
    cfg = load_config(recipe)
    assert cfg.reported["cityscapes"][0]["mIoU"] == "65.30"
    recipe.write_text('base: gta-dinov2-l\nreported:\n  cityscapes: [{mIoU: "high", split: val, source: x}]\n')
    with pytest.raises(ReinError, match=r"reported = .* is invalid; it must be a mapping \{dataset: \[\{mIoU: number"):
        load_config(recipe)


# ---- printed as published everywhere


def test_rein_models_prints_bdd100ks_60_0_and_labels_table_5(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("REIN_HOME", str(tmp_path))
    assert rein("models") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  rein-")}
    assert "bdd100k val 60.0 [README 2024]" in lines["rein-dinov2-l-gta"]  # was printed as 60
    citys = lines["rein-dinov2-l-citys"]
    assert (
        "bdd100k val 65.0* [paper Table 5; measured on a 512-crop Cityscapes model (the paper's protocol), "
        "not this 1024-crop release]" in citys
    )
    assert "mapillary val 72.3* [paper Table 5; measured on a 512-crop" in citys
    assert "cityscapes-c val 60.0 [README 2024]" in citys and "acdc test 77.6 [README 2024 (ACDC test server)]" in citys


def test_the_train_list_prints_recipe_figures_as_published(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rein("train", "--list") == 0
    out = capsys.readouterr().out
    assert "bdd100k 60.4 / 60.0;" in out and "mapillary 55.0 / 55.55" in out  # 60.0 and 55.0, not 60 or 55


def evaluation(reported: tuple[Reported, ...], assumed: list[str] | None = None) -> Evaluation:
    entry = DatasetResult(images=4, mIoU=61.234, mAcc=70.0, aAcc=90.0, reported=reported)
    return Evaluation(mode="slide", crop=512, stride=341, datasets={"bdd100k": entry}, assumed=assumed or [])


def test_eval_prints_report_md_and_results_json_keep_the_published_digits(tmp_path):
    from rein_cli.engine.results import write_results_file

    results = evaluation((Reported(60.0, "val", "README 2024"), Reported("65.30", "val", "a paper")))
    table, side, markdown = format_table(results), format_comparison(results), format_markdown(results)
    assert "reported mIoU" in table and table.split("reported mIoU")[1].split()[0] == "60.0"
    assert "ours  61.23   published   60.0 (val, README 2024)" in side
    assert "published  65.30 (val, a paper)" in side
    assert "| 60.0 (val, README 2024); 65.30 (val, a paper) |" in markdown
    again = read_results(write_results_file(results, tmp_path))
    assert [r.mIoU.text for r in again.datasets["bdd100k"].reported] == ["60.0", "65.30"]


def test_compare_prints_the_paper_line_as_published_and_names_another_checkpoint(tmp_path):
    from rein_cli.engine.results import write_results_file

    figures = (Reported(65.0, "val", "paper Table 5", "a 512-crop model"),)
    results = evaluation(figures)
    results.mean_of, results.mean_mIoU = ["bdd100k"], 61.23
    file = write_results_file(results, tmp_path / "a")
    table = compare([f"rein={file}"])
    text, csv = format_text(table), format_csv(table)
    assert "  paper" in text and "65.0*" in text.split("  paper")[1].splitlines()[0]
    assert "note: rein: the paper's bdd100k 65.0* was measured on a 512-crop model" in text
    assert ",65.0," in csv


# ---- the Table 5 figures and the assumed settings of the releases


def test_the_table_5_figures_carry_the_checkpoint_they_came_from():
    release = RELEASES["rein-dinov2-l-citys"]
    assert release.crop == 1024
    for target, (paper, authors) in (("bdd100k", (65.0, 65.43)), ("mapillary", (72.3, 71.69))):
        table5, issue49 = release.reported[target]
        assert (table5.mIoU, table5.source, issue49.mIoU) == (paper, "paper Table 5", authors)
        assert "512-crop" in table5.checkpoint and "not this 1024-crop release" in table5.checkpoint
        assert "Cityscapes512" in issue49.checkpoint and "issue #49" in issue49.checkpoint
    assert not any(r.checkpoint for r in release.reported["acdc"])  # measured on this release


def test_each_release_says_what_was_assumed():
    assumed = {name: release.assumed() for name, release in RELEASES.items()}
    for name in ("rein-dinov2-s-gta", "rein-dinov2-b-gta"):
        (line,) = assumed[name]
        assert line == (
            f"{name}: feature_indices = 3, 5, 7, 11 (the release's config is not available here; rein's 12-block "
            "default)"
        )
    clip = assumed["rein-clip-l-gta"]
    assert clip[0].startswith("rein-clip-l-gta: feature_indices = 7, 11, 15, 23 (as the other ViT-L configs")
    assert "structure = Rein after every block of timm's CLIP ViT-L, the class embedding added once" in clip[1]
    assert "adds the class embedding twice" in clip[1]
    sam = assumed["rein-sam-h-gta"]
    assert sam[0].startswith("rein-sam-h-gta: feature_indices = 7, 15, 23, 31") and "no SAM neck" in sam[1]
    assert assumed["rein-dinov2-l-gta"] == [] and assumed["rein-eva02-l-gta"] == []  # their configs are known
    (source,) = model_sources(adapter="rein-dinov2-s-gta")
    assert list(source.assumed) == assumed["rein-dinov2-s-gta"]
    assert [s.assumed for s in model_sources(backbone="dinov2-l")] == [(), ()]


@pytest.fixture
def released(tmp_path, monkeypatch):
    """A tiny DINOv2-S release, with the backbone in its file, converted as `rein pull` converts it: its
    config.json names the release; the release assumes its feature indices."""
    torch.manual_seed(1)
    model = build_segmentor("dinov2-s", crop_size=64, feature_indices=[0, 1, 2, 3], backbone_kwargs=VIT)
    state = {to_official(k): v for k, v in model.state_dict().items()}
    release = Release(
        "rein-tiny-assumed",
        "TINY/iter_40000_published.pth",
        "dinov2-s",
        64,
        "gta5",
        "a tiny release for tests",
        {
            "feature_indices": Setting((0, 1, 2, 3), "assumed: a guess for the test"),
            "backbone_kwargs": Setting(VIT, "test"),
        },
        {"synthetic-fog": (Reported(12.0, "val", "paper Table 5", "another model"),)},
    )
    monkeypatch.setitem(RELEASES, release.name, release)
    folder = convert_official_checkpoint(
        state,
        "dinov2-s",
        tmp_path / "converted",
        crop_size=64,
        settings=release.model_settings(),
        provenance={"adapter": release.name},
    )
    return release, folder


def test_rein_eval_says_what_was_assumed_beside_the_result(released, synthetic_root, tmp_path, capsys):
    _, folder = released
    out = tmp_path / "eval"
    args = ["--target", "synthetic-fog", "--data-root", synthetic_root, "--mode", "whole", "--no-progress"]
    assert rein("eval", folder, *args, "--out", out) == 0
    printed = capsys.readouterr().out
    line = "rein-tiny-assumed: feature_indices = 0, 1, 2, 3 (a guess for the test)"
    assert f"assumed (the release does not publish these; the result depends on them):\n  {line}" in printed
    assert f"- assumed, not published with the release: {line}" in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["assumed"] == [line]
    assert read_results(out / "results.json").assumed == [line]


def test_eval_of_a_release_labels_figures_of_another_checkpoint(released, synthetic_root, tmp_path):
    release, folder = released
    source = ModelSource(release.name, checkpoint=folder, reported=release.reported, assumed=tuple(release.assumed()))
    results = evaluate(source, ["synthetic-fog"], data_dir=synthetic_root, mode="whole", progress=False, out=tmp_path)
    table = format_table(results)
    assert table.split("reported mIoU")[1].split()[0] == "12.0*"
    assert "  * synthetic-fog: paper Table 5; measured on another model" in table
    assert "published   12.0 (val, paper Table 5; measured on another model)" in format_comparison(results)
    assert "12.0 (val, paper Table 5; measured on another model)" in (tmp_path / "report.md").read_text()
    assert results.assumed == release.assumed()
