"""`rein compare`: hand-made results with known numbers (seeds pooled, missing targets, paper figures, the exact
Markdown and CSV), a corruption evaluation's one column, a real training run, and the inputs it refuses. Which
inputs pool as seeds is tested in test_compare_pooling.py."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
import yaml

from rein_cli.engine.compare import compare, model_settings
from rein_cli.engine.compare_report import format_csv, format_markdown, format_text, write_comparison
from rein_cli.errors import ReinError

from .fake_results import fake_run, results
from .helpers import errors, rein, sets


@pytest.fixture
def three_seeds_and_a_baseline(tmp_path):
    """Three seeds of one method, labelled alike, and one baseline without published figures nor mapillary."""
    a1 = results(tmp_path / "s1", {"cityscapes": 66.0, "bdd100k": 60.0, "mapillary": 65.0}, mean=63.67)
    a2 = results(tmp_path / "s2", {"cityscapes": 67.0, "bdd100k": 61.5, "mapillary": 66.0}, mean=64.83)
    a3 = results(tmp_path / "s3", {"cityscapes": 68.5, "bdd100k": 62.0, "mapillary": 67.0}, mean=65.25)
    base = results(tmp_path / "base", {"bdd100k": 40.0, "cityscapes": 50.0}, params=1_234_567, paper=False)
    return [f"rein={a1}", f"rein={a2.parent}", f"rein={a3}", str(base)]


def test_seeds_are_pooled_with_the_sample_std(three_seeds_and_a_baseline):
    table = compare(three_seeds_and_a_baseline)
    assert table.split == "val" and table.targets == ("cityscapes", "bdd100k", "mapillary")
    rein_row, base = table.rows
    assert [r.label for r in table.rows] == ["rein", "rein dinov2-l"] and (rein_row.seeds, base.seeds) == (3, 1)
    city = rein_row.cells["cityscapes"]
    assert city.values == (66.0, 67.0, 68.5)
    assert city.mean == pytest.approx(67.1666666)
    # the sample standard deviation (n - 1), by hand: deviations -7/6, -1/6, 4/3
    assert city.std == pytest.approx(((49 / 36 + 1 / 36 + 16 / 9) / 2) ** 0.5)
    assert city.std == pytest.approx(statistics.stdev([66.0, 67.0, 68.5]))
    assert city.paper == 66.4  # the val figure, not the first (test) one
    assert rein_row.cells["mapillary"].values == (65.0, 66.0, 67.0)
    assert rein_row.cells["DG mean"].values == (63.67, 64.83, 65.25)
    assert rein_row.cells["DG mean"].paper == pytest.approx((66.4 + 60.4 + 66.1) / 3)  # over the first seed's mean_of
    assert rein_row.parameters == pytest.approx(2.99)
    assert base.cells["mapillary"].values == () and base.cells["cityscapes"].paper is None
    assert base.cells["DG mean"].values == (45.0,)
    # results.json alone records no seed: the row stands on the label the user gave them, and says so
    assert table.notes[1].startswith("rein: pooled on its label alone; 3 of its 3 inputs record no train.seed")
    assert len(table.notes) == 3 and table.notes[2].startswith("no paired intervals for 4 of 4 inputs")


def test_markdown_csv_and_terminal_exactly(three_seeds_and_a_baseline, tmp_path):
    table = compare(three_seeds_and_a_baseline, targets=["citys", "bdd100k"])  # an alias chooses a column
    assert table.targets == ("cityscapes", "bdd100k")
    s1, s2, s3, base = (tmp_path / f / "results.json" for f in ("s1", "s2", "s3", "base"))
    assert format_markdown(table) == (
        "# Comparison\n"
        "\n"
        "Split: val; cells: mIoU (%); a row with several seeds shows their mean ± the sample standard deviation "
        '(n - 1); the "paper" line under a row gives the published figures (those for the split compared, where the '
        "paper has them).\n"
        "\n"
        "| method | cityscapes | bdd100k | DG mean | params (M) | seeds |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| rein | 67.17 ± 1.26 | 61.17 ± 1.04 | 64.58 ± 0.82 | 2.99 | 3 |\n"
        "| *paper* | 66.4 | 60.4 | 64.30 |  |  |\n"  # published figures as published; their mean computed
        "| rein dinov2-l | 50.00 | 40.00 | 45.00 | 1.23 | 1 |\n"
        "\n"
        "- DG mean: each evaluation's own mean mIoU, over rein: cityscapes, bdd100k, mapillary; rein dinov2-l: "
        "bdd100k, cityscapes\n"
        "- rein: pooled on its label alone; 3 of its 3 inputs record no train.seed (no run's config.yaml), so nothing "
        "shows that they are different seeds\n"
        "- no paired intervals for 4 of 4 inputs: no images.npz beside their results.json (evaluated before this "
        "release; evaluate again with rein eval --out)\n"
        "\n"
        "## Inputs\n"
        "\n"
        "| method | seed | results |\n"
        "|---|---:|---|\n"
        f"| rein | - | `{s1}` |\n"
        f"| rein | - | `{s2}` |\n"
        f"| rein | - | `{s3}` |\n"
        f"| rein dinov2-l | - | `{base}` |\n"
        "\n"
        "![rein vs rein dinov2-l](compare.png)\n"
    )
    assert format_csv(table) == (
        "method,cityscapes,cityscapes_std,cityscapes_paper,bdd100k,bdd100k_std,bdd100k_paper,"
        "mean_mIoU,mean_mIoU_std,mean_mIoU_paper,trainable_parameters_M,seeds\n"
        "rein,67.17,1.26,66.4,61.17,1.04,60.4,64.58,0.82,64.30,2.99,3\n"
        "rein dinov2-l,50.00,,,40.00,,,45.00,,,1.23,1\n"
    )
    text = format_text(table).splitlines()
    assert text[1:5] == [
        "method           cityscapes       bdd100k       DG mean  params (M)  seeds",
        "rein           67.17 ± 1.26  61.17 ± 1.04  64.58 ± 0.82        2.99      3",
        "  paper                66.4          60.4         64.30",
        "rein dinov2-l         50.00         40.00         45.00        1.23      1",
    ]


def test_files_are_written_and_the_chart_is_a_png(three_seeds_and_a_baseline, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert rein("compare", *three_seeds_and_a_baseline, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "rein           67.17 ± 1.26" in printed and "- " in printed  # the missing mapillary of the baseline
    assert "note: rein: pooled on its label alone" in printed
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare.md").read_text() == format_markdown(compare(three_seeds_and_a_baseline))
    assert (out / "compare.csv").read_text().splitlines()[0].endswith("mean_mIoU_paper,trainable_parameters_M,seeds")
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.md", "compare.png"]  # no temporaries


def test_a_corruption_evaluation_is_one_column(tmp_path):
    clean = results(tmp_path / "clean", {"cityscapes": 60.0})
    pairs = {f"cityscapes/{c}-{s}": v for (c, s), v in {("fog", 1): 50.0, ("fog", 3): 40.0, ("snow", 1): 30.0}.items()}
    corrupted = results(
        tmp_path / "corrupted",
        pairs,
        corruption={
            "spec": "fog:1,fog:3,snow:1",
            "datasets": {
                "cityscapes": {
                    "mIoU": 40.0,
                    "pairs": 3,
                    "per_corruption": {"fog": {"1": 50.0, "3": 40.0, "mean": 45.0}, "snow": {"1": 30.0, "mean": 30.0}},
                }
            },
        },
    )
    table = compare([f"clean={clean}", f"corrupted={corrupted}"])
    assert table.targets == ("cityscapes", "cityscapes-C")  # no column for a pair
    clean_row, corrupted_row = table.rows
    assert corrupted_row.cells["cityscapes-C"].values == (40.0,) and corrupted_row.cells["cityscapes"].values == ()
    assert clean_row.cells["cityscapes-C"].values == ()
    assert format_csv(table).splitlines()[2].startswith("corrupted,,,,40.00,,,40.00,")
    assert "corrupted: cityscapes-C" in table.notes[0]  # the pairs of its mean named by their column


def test_a_corruption_column_shows_the_published_figure_of_the_whole_protocol(tmp_path):
    figure = [{"mIoU": 60.0, "split": "val", "source": "README 2024"}]
    summary = {"mIoU": 41.5, "pairs": 75, "per_corruption": {}, "reported": figure}
    corrupted = results(
        tmp_path / "c", {"cityscapes/fog-1": 41.5}, corruption={"spec": "all", "datasets": {"cityscapes": summary}}
    )
    (row,) = compare([f"release={corrupted}"]).rows
    assert row.cells["cityscapes-C"].values == (41.5,) and row.cells["cityscapes-C"].paper == 60.0


def test_a_training_run_beside_a_results_file(synthetic_root, tmp_path, capsys):
    recipe = tmp_path / "tiny-ablation.yaml"
    recipe.write_text("model:\n  rein:\n    rank: 4\n")
    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog','synthetic-night']", "train.seed=7")
    assert rein("train", recipe, *args, "--iters", 2, "--out", run, "--no-progress") == 0
    assert json.loads((run / "checkpoints" / "last" / "config.json").read_text())["recipe"] == "tiny-ablation"
    evaluated = json.loads((run / "eval" / "results.json").read_text())
    other = results(tmp_path / "other", {"synthetic-night": 12.5, "synthetic-rain": 10.0}, paper=False)
    capsys.readouterr()
    assert rein("compare", run, other, "--out", tmp_path / "cmp") == 0
    table = compare([str(run), str(other)])
    assert [r.label for r in table.rows] == ["tiny-ablation", "rein dinov2-l"]
    assert table.targets == ("synthetic-fog", "synthetic-night", "synthetic-rain")
    ours = table.rows[0]
    assert ours.evaluations[0].seed == 7 and ours.evaluations[0].file == run / "eval" / "results.json"
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)  # the same seed twice is no second seed: a row of its own, and why
    twice = compare([str(run), str(copy)])
    assert [(r.label, r.seeds) for r in twice.rows] == [("tiny-ablation", 1), ("tiny-ablation #2", 1)]
    assert "tiny-ablation: 2 inputs not pooled as seeds: train.seed 7 in more than one input" in twice.notes[1]
    assert ours.cells["synthetic-fog"].values == (evaluated["datasets"]["synthetic-fog"]["mIoU"],)
    assert ours.cells["DG mean"].values == (evaluated["mean_mIoU"],)
    assert ours.parameters == pytest.approx(evaluated["trainable_parameters"] / 1e6)
    assert table.rows[1].cells["synthetic-fog"].values == ()
    assert f"| tiny-ablation | 7 | `{run / 'eval' / 'results.json'}` |" in format_markdown(table)
    # without the recipe's name: method, backbone and the settings that differ from the defaults
    config_file = run / "checkpoints" / "last" / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items() if k != "recipe"}))
    label = compare([str(run)]).rows[0].label
    assert label.startswith("rein vit-tiny ") and "model.rein.rank=4" in label and "model.head=fpn" in label
    assert "model.backbone_kwargs.depth=4" in label and "model.pretrained=false" in label
    # a resumed run keeps the recipe's name its step checkpoint recorded
    assert rein("train", "--resume", run, *args, "--iters", 3, "--no-progress") == 0, errors(capsys)
    assert json.loads(config_file.read_text())["recipe"] == "tiny-ablation"
    assert compare([str(run)]).rows[0].label == "tiny-ablation"


def test_model_settings_are_read_generically():
    settings = model_settings(
        {
            "backbone": "dinov2-l",
            "method": "rein",
            "num_classes": 19,
            "rein": {"rank": 16, "token_length": 100, "link": "shared"},  # a key the defaults do not know
            "lora": {"r": 8},
            "crop_size": 1024,
        }
    )
    assert settings == {"model.rein.link": "shared", "model.lora.r": 8, "model.crop_size": 1024}


def test_label_path_names_rows_and_same_labels_pool(tmp_path):
    a = results(tmp_path / "a", {"cityscapes": 50.0})
    b = results(tmp_path / "b", {"cityscapes": 52.0})
    table = compare([f"mine={a}", f"mine={b.parent}", str(a)])
    assert [(r.label, r.seeds) for r in table.rows] == [("mine", 2), ("rein dinov2-l", 1)]
    assert "| a\\|b | - |" in format_markdown(compare([f"a|b={a}"]))  # escaped in its Markdown cell
    assert compare([f"rank=4={a}"]).rows[0].label == "rank=4"  # a label holding "="
    odd = tmp_path / "x=y"  # a path holding "=" is a path
    results(odd, {"cityscapes": 1.0})
    assert compare([str(odd)]).rows[0].label == "rein dinov2-l"


def test_rows_evaluated_differently_are_named_in_a_note(tmp_path):
    slide = dict(mode="slide", crop=512, stride=341)
    a = results(tmp_path / "a", {"cityscapes": 50.0}, **slide, precision="bf16")
    b = results(tmp_path / "b", {"cityscapes": 52.0}, **slide)  # recorded no precision: an fp32 evaluation
    c = results(tmp_path / "c", {"cityscapes": 51.0}, mode="whole", crop=512, precision="fp32")
    table = compare([f"rein={a}", f"base={b}", f"whole={c}"])
    assert table.notes[1] == (
        "not evaluated alike, so the differences between rows are not the models' alone: "
        "mode slide (rein, base), whole (whole); stride 341 (rein, base), none (whole); "
        "precision bf16 (rein), fp32 (base, whole)"
    )
    assert table.notes[1] in format_markdown(table) and table.notes[1] in format_text(table)
    fp32 = results(tmp_path / "d", {"cityscapes": 52.0}, **slide, precision="fp32")
    alike = compare([f"base={b}", f"other={fp32}"])
    assert not any(note.startswith("not evaluated alike") for note in alike.notes)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist; give a results.json, an evaluation folder or a training run"),
        ("empty-folder", "holds neither results.json nor a training run (config.yaml)"),
        ("run-without-eval", "has no final evaluation results"),
        ("schema-1", "is a results.json of schema 1; rein compare reads schema 2"),
        ("no-schema", "no schema (an older rein)"),
        ("not-json", "is not valid JSON"),
        ("splits", "the results mix splits (val: "),
        ("twice", "more than once"),
        ("target", '--targets: no input has "acdc-fog"; the targets there are: cityscapes'),
    ],
)
def test_bad_inputs_are_one_clear_error(tmp_path, capsys, case, message):
    good = results(tmp_path / "good", {"cityscapes": 50.0})
    targets = []
    if case == "missing":
        inputs = [tmp_path / "nowhere"]
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        inputs = [tmp_path / "empty"]
    elif case == "run-without-eval":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_text("model: {}\n")
        inputs = [tmp_path / "run"]
    elif case in ("schema-1", "no-schema"):
        data = json.loads(good.read_text())
        data.pop("schema") if case == "no-schema" else data.update(schema=1)
        (tmp_path / "old").mkdir()
        (tmp_path / "old" / "results.json").write_text(json.dumps(data))
        inputs = [good, tmp_path / "old"]
    elif case == "not-json":
        (tmp_path / "bad.json").write_text("{")
        inputs = [tmp_path / "bad.json"]
    elif case == "splits":
        inputs = [good, results(tmp_path / "test", {"cityscapes": 50.0}, split="test")]
    elif case == "twice":
        inputs = [f"x={good}", f"x={good.parent}"]
    else:
        inputs, targets = [good], ["--targets", "cityscapes,acdc-fog"]
    with pytest.raises(ReinError) as caught:
        compare([str(p) for p in inputs], targets=targets[1].split(",") if targets else None)
    assert message in str(caught.value)
    assert rein("compare", *inputs, *targets, "--out", tmp_path / "out") == 1
    assert message in errors(capsys) and not (tmp_path / "out").exists()  # nothing written


def test_write_comparison_is_atomic_over_an_earlier_one(tmp_path):
    a = results(tmp_path / "a", {"cityscapes": 50.0})
    out = tmp_path / "cmp"
    write_comparison(compare([str(a)]), out)
    b = results(tmp_path / "b", {"cityscapes": 52.0})
    write_comparison(compare([str(b)]), out)
    assert "52.00" in (out / "compare.csv").read_text() and len(list(out.iterdir())) == 3


FIX = "correct it, or evaluate the model again with `rein eval`"


@pytest.mark.parametrize(
    "where, value, message",
    [
        (["datasets", "cityscapes", "mIoU"], "abc", "datasets.cityscapes.mIoU must be a number or null, found 'abc'"),
        (["datasets", "cityscapes", "mIoU"], "57.3", "datasets.cityscapes.mIoU must be a number or null, found '57.3'"),
        (["trainable_parameters"], "abc", "trainable_parameters must be a whole number or null, found 'abc'"),
        (["mean_mIoU"], True, "mean_mIoU must be a number or null, found true"),
        (["mean_of"], "cityscapes", "mean_of must be a list of strings, found 'cityscapes'"),
        (["datasets", "cityscapes"], [1, 2], "datasets.cityscapes must be an object of keys, found [1, 2]"),
        (["datasets", "cityscapes", "reported"], ["x"], "datasets.cityscapes.reported[0] must be an object of keys"),
        (["datasets", "cityscapes", "confusion"], "abc", "datasets.cityscapes.confusion must be a square list of"),
        (["model"], "abc", "model must be an object of keys or null, found 'abc'"),
        (
            ["corruption"],
            {"spec": "fog", "datasets": {"cityscapes": {"mIoU": 50.0, "per_corruption": {"fog": {"1": "abc"}}}}},
            "corruption.datasets.cityscapes.per_corruption.fog.1 must be a number or null, found 'abc'",
        ),
    ],
)
def test_a_results_value_of_the_wrong_type_is_one_line_naming_file_and_key(tmp_path, capsys, where, value, message):
    good = results(tmp_path / "good", {"cityscapes": 50.0, "bdd100k": 40.0})
    odd = results(tmp_path / "odd", {"cityscapes": 52.0, "bdd100k": 41.0})
    data = json.loads(odd.read_text())
    inner = data
    for key in where[:-1]:
        inner = inner[key]
    original, inner[where[-1]] = inner.get(where[-1]), value
    odd.write_text(json.dumps(data))
    assert rein("compare", good, odd, "--out", tmp_path / "cmp") == 1
    lines = errors(capsys).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {odd}: {message}") and lines[0].endswith(f"; {FIX}")
    assert not (tmp_path / "cmp").exists()
    if original is None:
        inner.pop(where[-1])
    else:
        inner[where[-1]] = original  # corrected, as the message says
    odd.write_text(json.dumps(data))
    assert rein("compare", good, odd, "--out", tmp_path / "cmp") == 0
    assert "?" not in (tmp_path / "cmp" / "compare.md").read_text().split("\n\n")[0]


def test_a_run_config_of_another_shape_is_one_line(tmp_path, capsys):
    good = results(tmp_path / "good", {"cityscapes": 50.0})
    run = fake_run(tmp_path / "run", {"cityscapes": 51.0})
    config = run / "config.yaml"
    text = config.read_text()
    for section, key, message in (
        ("train", None, "train must be an object of keys or null, found 'abc'"),  # was a traceback
        ("train", "seed", "train.seed must be a whole number or null, found 'abc'"),
        ("model", None, "model must be an object of keys or null, found 'abc'"),
    ):
        odd = yaml.safe_load(text)
        if key is None:
            odd[section] = "abc"
        else:
            odd[section][key] = "abc"
        config.write_text(yaml.safe_dump(odd, sort_keys=False))
        assert rein("compare", good, run, "--out", tmp_path / "cmp") == 1
        assert errors(capsys) == f"error: {config}: {message}; correct it to the value the run was trained with"
    config.write_text("train: [1\n")
    assert rein("compare", good, run, "--out", tmp_path / "cmp") == 1
    assert len(errors(capsys).splitlines()) == 1  # PyYAML's report, on one line
    config.write_text(text)
    assert rein("compare", good, run, "--out", tmp_path / "cmp") == 0
