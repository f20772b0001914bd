"""YAML and JSON read strictly: a key given twice is refused naming it and both lines (recipes, classes.yaml, a
checkpoint's config.json, a run's config.yaml), and typed fields whose errors name the file and the key."""

import json
import math

import pytest
import yaml

from rein_cli.documents import Fields, load_json, load_yaml
from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .fake_results import fake_run, results, tiny_checkpoint
from .helpers import errors, rein

TWICE = "the second would silently replace the first: merge them into one or delete one"


def test_yaml_keys_given_twice_name_both_lines():
    text = "model:\n  backbone: vit-tiny\ndata:\n  batch_size: 2\nmodel:\n  rein: {token_length: 8}\n"
    with pytest.raises(ReinError) as err:
        load_yaml(text, "recipe r.yaml")
    assert str(err.value) == f'recipe r.yaml: "model" is given twice, on lines 1 and 5; {TWICE}'
    with pytest.raises(ReinError, match=r'^x: "lr" is given twice, on lines 2 and 4;'):
        load_yaml("optim:\n  lr: 1\n  eps: 2\n  lr: 3\n", "x")
    with pytest.raises(ReinError, match=r'^x: "a" is given twice, on line 1;'):
        load_yaml("m: {a: 1, a: 2}\n", "x")
    assert load_yaml("a: [{k: 1}, {k: 2}]\nb: {k: 3}\n", "x") == {"a": [{"k": 1}, {"k": 2}], "b": {"k": 3}}
    assert load_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", "x")["c"] == {"x": 3, "y": 2}  # merge keys
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1\n", "x")  # a syntax error stays PyYAML's, for the caller to word
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object/apply:os.system ['true']\n", "x")  # still a safe loader


def test_json_keys_given_twice_name_both_lines():
    text = '{\n  "format": 1,\n  "model": {"backbone": "vit-tiny"},\n  "format" :\n    2\n}'
    with pytest.raises(ReinError) as err:
        load_json(text, "ckpt/config.json")
    assert str(err.value) == f'ckpt/config.json: "format" is given twice, on lines 2 and 4; {TWICE}'
    with pytest.raises(ReinError, match=r'"y" is given twice, on line 1;'):
        load_json('{"a": [1, {"y": 2, "y": 3}]}', "x")
    assert load_json('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}], "n": NaN}', "x")["b"] == [{"a": 1}, {"a": 2}]
    with pytest.raises(json.JSONDecodeError):
        load_json('{"a": 1', "x")


def test_a_recipe_naming_model_twice_is_refused_and_merged_it_trains_what_it_asks(synthetic_root, tmp_path, capsys):
    from rein_cli.config import load_config

    first = "model:\n  backbone: vit-tiny\n  pretrained: false\n  crop_size: 64\n  head: fpn\n  head_channels: 16\n"
    first += "  feature_indices: [0, 1, 2, 3]\n  backbone_kwargs: {depth: 4, embed_dim: 32, num_heads: 2}\n"
    second = "model:\n  rein: {token_length: 8}\n"
    data = f"data:\n  root: {synthetic_root}\n  batch_size: 2\n  num_workers: 0\n  eval: []\n"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(first + data + second)
    out = tmp_path / "run"
    assert rein("train", recipe, "--iters", 1, "--out", out, "--no-progress") == 1
    assert errors(capsys) == f'error: recipe {recipe}: "model" is given twice, on lines 1 and 14; {TWICE}'
    assert not out.exists()  # refused before anything: no run, no backbone download
    recipe.write_text(first + "  rein: {token_length: 8}\n" + data)  # the two merged into one, as it says
    cfg = load_config(recipe)
    assert (cfg.model.backbone, cfg.model.rein.token_length) == ("vit-tiny", 8)
    assert rein("train", recipe, "--iters", 1, "--out", out, "--no-progress") == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["backbone"] == "vit-tiny"


def test_a_key_given_twice_in_a_base_recipe_names_that_file(tmp_path):
    from rein_cli.config import load_config

    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\ntrain:\n  seed: 3\n")
    with pytest.raises(ReinError, match=rf'^recipe {tmp_path / "base.yaml"}: "lr" is given twice, on lines 2 and 3;'):
        load_config(tmp_path / "top.yaml")


def test_classes_yaml_with_a_key_given_twice(tmp_path, capsys):
    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1], "classes: [a, b]\nclasses: [a, b, c]\n")
    args = ("data", "prepare", "custom", "--from", src, "--name", "mine", "--data-root", tmp_path / "root")
    assert rein(*args, "--no-progress") == 1
    assert errors(capsys) == f'error: {src / "classes.yaml"}: "classes" is given twice, on lines 1 and 2; {TWICE}'
    (src / "classes.yaml").write_text("classes: [a, b]\n")  # one of them deleted
    assert rein(*args, "--no-progress") == 0


def test_a_checkpoint_config_with_a_key_given_twice(tmp_path, capsys):
    from rein_cli.engine.checkpoint import read_checkpoint_config

    folder = tiny_checkpoint(tmp_path / "ckpt")
    file = folder / "config.json"
    text = file.read_text()
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith('  "classes"'))
    lines = text.splitlines()
    lines.insert(1, '  "classes": ["only", "two"],')
    file.write_text("\n".join(lines))
    with pytest.raises(ReinError) as err:
        read_checkpoint_config(folder)
    assert str(err.value) == f'{file}: "classes" is given twice, on lines 2 and {line + 1}; {TWICE}'
    image = tmp_path / "a.png"
    fake.image(image, seed=0)
    assert rein("predict", folder, image, "--out", tmp_path / "pred", "--no-progress") == 1
    assert str(err.value) in errors(capsys)
    file.write_text(text)  # the key once
    assert read_checkpoint_config(folder)["classes"][0] == "road"


def test_a_run_config_with_a_key_given_twice_in_compare_and_resume(tmp_path, capsys):
    run = fake_run(tmp_path / "run", {"cityscapes": 51.0})
    config = run / "config.yaml"
    config.write_text(config.read_text() + "train:\n  seed: 7\n")
    line = next(n for n, row in enumerate(config.read_text().splitlines(), 1) if row == "train:")
    expected = f'"train" is given twice, on lines {line} and {len(config.read_text().splitlines()) - 1}; {TWICE}'
    assert rein("compare", run, "--out", tmp_path / "cmp") == 1
    assert errors(capsys) == f"error: {config}: {expected}"
    assert rein("train", "--resume", run) == 1
    assert errors(capsys) == f"error: recipe {config}: {expected}"


# ---- typed fields ------------------------------------------------------------------------------------------------


def test_fields_name_the_file_the_key_and_what_was_found():
    f = Fields.of({"a": "abc", "n": None, "b": True, "m": {"x": [1, "y"]}, "l": [{"k": 1}, 5]}, "r.json", "fix it")
    with pytest.raises(ReinError) as err:
        f.number("a")
    assert str(err.value) == "r.json: a must be a number, found 'abc'; fix it"
    assert math.isnan(f.number("n", null=True)) and f.number("gone", 4) == 4.0
    with pytest.raises(ReinError, match=r"^r.json: b must be a number, found true; fix it$"):
        f.number("b")  # a boolean is no number
    with pytest.raises(ReinError, match=r"^r.json: gone is missing; fix it$"):
        f.text("gone")
    with pytest.raises(ReinError, match=r"^r.json: m.x must be a list of numbers, found \[1, 'y'\]; fix it$"):
        f.object("m").numbers("x")
    with pytest.raises(ReinError, match=r"^r.json: l\[1\] must be an object of keys, found 5; fix it$"):
        f.objects("l")
    with pytest.raises(ReinError, match=r"^r.json: must hold an object of keys, found \[\]; fix it$"):
        Fields.of([], "r.json", "fix it")
    assert f.integer("gone", None, null=True) is None and f.texts("gone", ["x"]) == ["x"]


def test_results_json_with_a_key_given_twice(tmp_path, capsys):
    file = results(tmp_path / "ev", {"cityscapes": 50.0})
    file.write_text(file.read_text().replace('"split": "val",', '"split": "val", "split": "test",'))
    assert rein("compare", file, "--out", tmp_path / "cmp") == 1
    assert errors(capsys) == f'error: {file}: "split" is given twice, on line 1; {TWICE}'
