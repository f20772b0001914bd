"""Config precedence, recipe loading, --set parsing and type checks, clear errors for unknown keys."""

import pytest
import yaml

from rein_cli.config import Config, config_from_dict, load_config, parse_override
from rein_cli.errors import ReinError


def test_defaults_are_the_paper_setting():
    cfg = Config()
    assert (cfg.model.backbone, cfg.model.crop_size, cfg.optim.lr, cfg.train.max_iters, cfg.data.batch_size) == (
        "dinov2-l", 512, 1e-4, 40000, 4)  # fmt: skip
    assert cfg.data.resize_ratios[0] == 0.5 and cfg.data.resize_ratios[-1] == 2.0 and len(cfg.data.resize_ratios) == 16


def test_precedence_recipe_then_set_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lr: 0.002}\ntrain: {max_iters: 10, seed: 1}\n")
    cfg = load_config(recipe, ["train.max_iters=20", "train.seed=2"], **{"train.max_iters": 30, "data.train": None})
    assert cfg.optim.lr == 0.002  # recipe
    assert cfg.train.seed == 2  # --set over recipe
    assert cfg.train.max_iters == 30  # explicit flag over --set
    assert cfg.data.train == "synthetic"  # None means "not set"


def test_set_parses_literals_and_strings():
    assert parse_override("optim.lr=2e-4") == (["optim", "lr"], 2e-4)
    assert parse_override("model.backbone=dinov2-s") == (["model", "backbone"], "dinov2-s")
    assert parse_override("data.eval=['a','b']") == (["data", "eval"], ["a", "b"])
    cfg = load_config(None, ["model.rein.rank=0", "model.pretrained=false", "optim.lr=1", "model.feature_indices=None"])
    assert cfg.model.rein.rank == 0 and cfg.model.pretrained is False and cfg.optim.lr == 1.0
    assert isinstance(cfg.optim.lr, float) and cfg.model.feature_indices is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", 'unknown config key "optim.lrr" \\(did you mean "optim.lr"\\?\\)'),
        ("train.max_iters=fast", "train.max_iters must be int, got 'fast'"),
        ("model.pretrained=maybe", "model.pretrained must be bool"),
        ("model=3", "model is a section"),
        ("data.eval=synthetic", "data.eval must be a list"),
        ("optim.lr", "must look like key=value"),
        ("data.batch_size=0", "data.batch_size = 0 is invalid; it must be >= 1"),
        ("model.crop_size=500", "model.crop_size = 500 is invalid"),
        ("eval.mode=tiles", "eval.mode = 'tiles' is invalid; it must be slide or whole"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ReinError, match=message):
        load_config(None, [override])


def test_shipped_recipe_and_round_trip(tmp_path):
    cfg = load_config("demo")
    assert cfg.model.backbone == "vit-tiny" and cfg.model.pretrained is False
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    with pytest.raises(ReinError, match=r'recipe "demoo".*did you mean "demo"'):
        load_config("demoo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ReinError, match="not valid YAML"):
        load_config(bad)
