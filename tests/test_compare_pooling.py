"""`rein compare` pools into one row only inputs that differ in the seed alone: runs of other settings, evaluations
on other targets or done otherwise, the same model evaluated twice, and results that record no seed get rows of
their own, named by what tells them apart, with one note saying why."""

from __future__ import annotations

import statistics

import pytest

from rein_cli.engine.compare import compare
from rein_cli.engine.compare_report import format_csv, format_text

from .fake_results import fake_run, results, tiny_checkpoint
from .helpers import rein

VALUES = {"cityscapes": 50.0, "bdd100k": 40.0}


def labels(table) -> list[tuple[str, int]]:
    return [(row.label, row.seeds) for row in table.rows]


def test_runs_of_other_lengths_are_rows_named_by_the_difference(tmp_path, capsys):
    short = fake_run(tmp_path / "short", {"cityscapes": 10.0}, train__seed=1, train__max_iters=2)
    long1 = fake_run(tmp_path / "long1", {"cityscapes": 15.0}, train__seed=1, train__max_iters=40)
    long2 = fake_run(tmp_path / "long2", {"cityscapes": 16.0}, train__seed=2, train__max_iters=40)
    table = compare([f"rein-dinov2={short}", f"rein-dinov2={long1}", f"rein-dinov2={long2}"])
    assert labels(table) == [("rein-dinov2 (train.max_iters=2)", 1), ("rein-dinov2 (train.max_iters=40)", 2)]
    assert table.rows[1].cells["cityscapes"].values == (15.0, 16.0)  # the two seeds of 40 iterations pool
    assert table.notes[1:3] == (
        'rein-dinov2: 3 inputs not pooled as seeds: they differ in train.max_iters (2 vs 40); rows "rein-dinov2 '
        '(train.max_iters=2)", "rein-dinov2 (train.max_iters=40)"',
        "no paired intervals for 3 of 3 inputs: no images.npz beside their results.json (evaluated before this "
        "release; evaluate again with rein eval --out)",
    )
    # without labels, the rows named after the model are told apart the same way
    assert [r.label for r in compare([str(short), str(long2)]).rows] == [
        "rein dinov2-l (train.max_iters=2)",
        "rein dinov2-l (train.max_iters=40)",
    ]
    assert rein("compare", short, long2, "--out", tmp_path / "cmp") == 0
    printed = capsys.readouterr().out
    assert "\nrein dinov2-l (train.max_iters=2)        10.00    10.00        2.99      1\n" in printed
    assert "note: rein dinov2-l: 2 inputs not pooled as seeds: they differ in train.max_iters (2 vs 40)" in printed
    assert "rein dinov2-l (train.max_iters=40),16.00," in (tmp_path / "cmp" / "compare.csv").read_text()


# Keys that say where or how fast a run went (pooled), and training settings (never pooled).
IGNORED = {
    "train__device": "cuda",
    "train__accumulation": 2,
    "train__checkpointing": True,
    "train__log_interval": 1,
    "train__checkpoint_interval": 10,
    "train__keep_checkpoints": 1,
    "train__eval_interval": 5,
    "data__num_workers": 0,
    "data__root": "/elsewhere/datasets",
    "data__eval": ["cityscapes", "bdd100k"],
    "eval__mode": "whole",
    "description": "another line",
}
COMPARED = {
    "optim__lr": 0.001,
    "data__batch_size": 8,
    "data__train": ["cityscapes"],
    "train__precision": "fp32",
    "train__init_from": "runs/a/checkpoints/last",
    "model__crop_size": 1024,
}


def test_real_seeds_pool_whatever_says_where_or_how_fast_they_ran(tmp_path):
    one = fake_run(tmp_path / "s1", {"cityscapes": 66.0, "bdd100k": 60.0}, train__seed=1)
    changed = {k: v for k, v in IGNORED.items() if "__" in k}
    two = fake_run(tmp_path / "s2", {"cityscapes": 67.0, "bdd100k": 61.5}, train__seed=2, **changed)
    text = (two / "config.yaml").read_text()
    described = text.replace("description: ''", f"description: {IGNORED['description']}")
    assert described != text
    (two / "config.yaml").write_text(described)
    table = compare([str(one), str(two)])
    assert labels(table) == [("rein dinov2-l", 2)]
    city = table.rows[0].cells["cityscapes"]
    assert city.values == (66.0, 67.0) and city.std == pytest.approx(statistics.stdev([66.0, 67.0]))
    assert len(table.notes) == 1  # the DG mean's datasets only: nothing held apart, nothing pooled on trust
    assert format_csv(table).splitlines()[1].startswith("rein dinov2-l,66.50,0.71,")


@pytest.mark.parametrize("key", sorted(COMPARED))
def test_any_training_setting_keeps_runs_apart(tmp_path, key):
    one = fake_run(tmp_path / "s1", VALUES, train__seed=1)
    two = fake_run(tmp_path / "s2", VALUES, train__seed=2, **{key: COMPARED[key]})
    dotted = key.replace("__", ".")
    rows = [r.label for r in compare([f"x={one}", f"x={two}"]).rows]
    assert len(rows) == 2 and rows[1].startswith(f"x ({dotted}=") and rows[0].startswith(f"x ({dotted}=")


def test_the_same_checkpoint_on_other_targets_is_no_second_seed(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", recipe="tiny", iterations=40)
    model = {"backbone": "vit-tiny", "revision": None, "checkpoint": str(checkpoint)}
    ab = results(tmp_path / "ab", {"cityscapes": 50.0, "bdd100k": 40.0}, model=model)
    ac = results(tmp_path / "ac", {"cityscapes": 50.0, "mapillary": 30.0}, model=model)
    table = compare([str(ab), str(ac)])
    assert labels(table) == [("tiny (targets: cityscapes, bdd100k)", 1), ("tiny (targets: cityscapes, mapillary)", 1)]
    assert table.rows[0].cells["DG mean"].values == (45.0,) and table.rows[1].cells["DG mean"].values == (40.0,)
    assert table.notes[1] == (
        "tiny: 2 inputs not pooled as seeds: they differ in targets (cityscapes, bdd100k vs cityscapes, mapillary); "
        'rows "tiny (targets: cityscapes, bdd100k)", "tiny (targets: cityscapes, mapillary)"'
    )
    # on the same targets again, and even under one label: the same weights twice, a row each
    again = results(tmp_path / "again", {"cityscapes": 50.5, "bdd100k": 40.0}, model=model)
    for inputs in ([str(ab), str(again)], [f"tiny={ab}", f"tiny={again}"]):
        table = compare(inputs)
        assert labels(table) == [("tiny", 1), ("tiny #2", 1)]
        assert f"{checkpoint.resolve()} evaluated more than once (the same weights" in table.notes[1]
    assert "\ntiny #2       50.50    40.00    45.25        2.99      1\n" in format_text(table)


def test_checkpoints_of_runs_bring_their_runs_seeds(tmp_path):
    """An evaluation of a run's checkpoint (`rein eval RUN/checkpoints/last`) is known by its run's config.yaml."""
    evaluated = []
    for seed in (1, 2):
        run = fake_run(tmp_path / f"run{seed}", VALUES, train__seed=seed, checkpoint={"recipe": "tiny"})
        model = {"backbone": "vit-tiny", "revision": None, "checkpoint": str(run / "checkpoints" / "last")}
        evaluated.append(results(tmp_path / f"eval{seed}", {"cityscapes": 50.0 + seed}, model=model))
    table = compare([str(e) for e in evaluated])
    assert labels(table) == [("tiny", 2)] and [e.seed for e in table.rows[0].evaluations] == [1, 2]
    assert len(table.notes) == 1


def test_results_without_a_seed_pool_only_under_a_label_given(tmp_path):
    one = results(tmp_path / "one", VALUES)
    two = results(tmp_path / "two", {"cityscapes": 52.0, "bdd100k": 41.0})
    table = compare([str(one), str(two)])
    assert labels(table) == [("rein dinov2-l", 1), ("rein dinov2-l #2", 1)]
    assert table.notes[1] == (
        "rein dinov2-l: 2 inputs not pooled as seeds: a train.seed is not recorded (no run's config.yaml), so they "
        'are not claimed as seeds; give them one label (LABEL=PATH) to pool them; rows "rein dinov2-l", '
        '"rein dinov2-l #2"'
    )
    table = compare([f"mine={one}", f"mine={two}"])
    assert labels(table) == [("mine", 2)]
    assert table.notes[1].startswith("mine: pooled on its label alone; 2 of its 2 inputs record no train.seed")
    # a run and a results.json: one seed unknown, so only a label given pools them
    run = fake_run(tmp_path / "run", VALUES, train__seed=3)
    assert labels(compare([str(run), str(one)])) == [("rein dinov2-l", 1), ("rein dinov2-l #2", 1)]
    assert labels(compare([f"m={run}", f"m={one}"])) == [("m", 2)]


@pytest.mark.parametrize(
    "other, names",
    [
        (dict(values={"cityscapes": 50.0}), ("x (targets: cityscapes, bdd100k)", "x (targets: cityscapes)")),
        (dict(trained_on=["cityscapes"]), ("x (trained on gta5)", "x (trained on cityscapes)")),
        (dict(params=1_000_000), ("x (2.99M params)", "x (1.00M params)")),
        (dict(mode="whole"), ("x (mode=slide)", "x (mode=whole)")),
        (dict(flip=True), ("x (flip=false)", "x (flip=true)")),
        (dict(precision="bf16"), ("x (precision=fp32)", "x (precision=bf16)")),  # none recorded: fp32
    ],
)
def test_evaluations_done_otherwise_are_rows_named_by_the_difference(tmp_path, other, names):
    one = results(tmp_path / "one", VALUES, mode="slide", flip=False)
    two = results(tmp_path / "two", other.pop("values", VALUES), **{"mode": "slide", "flip": False, **other})
    table = compare([f"x={one}", f"x={two}"])
    assert labels(table) == [(names[0], 1), (names[1], 1)]
    assert any(note.startswith("x: 2 inputs not pooled as seeds: they differ in ") for note in table.notes)
    how = table.notes[1].startswith("not evaluated alike") and table.notes[1].endswith(f"({names[1]})")
    assert how is ("mode" in other or "flip" in other or "precision" in other)


def test_a_generated_name_never_takes_another_rows(tmp_path):
    one = results(tmp_path / "one", VALUES)
    first, again = (fake_run(tmp_path / name, VALUES, train__seed=1) for name in ("first", "again"))
    table = compare([f"a #2={one}", f"a={first}", f"a={again}"])
    assert labels(table) == [("a #2", 1), ("a", 1), ("a #3", 1)]
    assert table.notes[1].endswith('rows "a", "a #3"')


def test_a_release_evaluated_twice_is_one_model(tmp_path):
    model = {"backbone": "dinov2-l", "revision": None, "adapter": "rein-dinov2-l-gta", "sha256": "5eed"}
    first = results(tmp_path / "first", VALUES, model=model)
    second = results(tmp_path / "second", {"cityscapes": 50.2, "bdd100k": 40.0}, model=model)
    table = compare([f"gta={first}", f"gta={second}"])
    assert labels(table) == [("gta", 1), ("gta #2", 1)]
    assert "rein-dinov2-l-gta 5eed evaluated more than once" in table.notes[1]
    assert labels(compare([str(first), str(second)])) == [("rein-dinov2-l-gta", 1), ("rein-dinov2-l-gta #2", 1)]
