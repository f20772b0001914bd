"""Config precedence, recipe loading, --set parsing and type checks, clear errors for unknown keys."""

import dataclasses

import pytest
import yaml

from rein_cli.config import Config, Head, InferenceMode, Method, choices, config_from_dict, load_config, parse_override
from rein_cli.errors import ReinError


def test_defaults_are_the_paper_setting():
    cfg = Config()
    assert (cfg.model.backbone, cfg.model.crop_size, cfg.optim.lr, cfg.train.max_iters, cfg.data.batch_size) == (
        "dinov2-l",
        512,
        1e-4,
        40000,
        4,
    )
    assert cfg.data.resize_ratios[0] == 0.5 and cfg.data.resize_ratios[-1] == 2.0 and len(cfg.data.resize_ratios) == 16


def test_precedence_recipe_then_set_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lr: 0.002}\ntrain: {max_iters: 10, seed: 1}\n")
    cfg = load_config(recipe, ["train.max_iters=20", "train.seed=2"], **{"train.max_iters": 30, "data.train": None})
    assert cfg.optim.lr == 0.002  # recipe
    assert cfg.train.seed == 2  # --set over recipe
    assert cfg.train.max_iters == 30  # explicit flag over --set
    assert cfg.data.train == ("synthetic",)  # None means "not set"


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
        ("data.eval=3", "data.eval must be a list"),
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


def test_configs_are_frozen_and_variants_are_replacements():
    cfg = load_config(None, ["model.feature_indices=[0, 1, 2, 3]", "model.backbone_kwargs={'depth': 2}"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.backbone = "dinov2-s"
    assert cfg.model.feature_indices == (0, 1, 2, 3) and cfg.data.eval == ("synthetic",)  # lists become tuples
    assert isinstance(cfg.optim.betas, tuple) and isinstance(cfg.data.resize_ratios, tuple)
    with pytest.raises(TypeError):
        cfg.model.backbone_kwargs["depth"] = 3  # read-only
    variant = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="dinov2-s"))
    assert variant.model.backbone == "dinov2-s" and cfg.model.backbone == "dinov2-l"
    plain = cfg.to_dict()  # plain data for YAML and JSON
    assert plain["model"]["feature_indices"] == [0, 1, 2, 3] and plain["model"]["backbone_kwargs"] == {"depth": 2}
    assert plain["optim"]["betas"] == [0.9, 0.999] and yaml.safe_load(yaml.safe_dump(plain)) == plain


def test_closed_choices_come_from_one_place():
    assert choices(Method) == ("rein", "frozen", "full", "lora", "adaptformer", "vpt")
    assert choices(Head) == ("mask2former", "fpn", "semfpn")
    assert choices(InferenceMode) == ("slide", "whole")
    with pytest.raises(
        ReinError,
        match=r"model.method = 'rein2' is invalid; it must be rein, frozen, full, lora, adaptformer or vpt \(did you",
    ):
        load_config(None, ["model.method=rein2"])
    with pytest.raises(ReinError, match=r"model\.head = 'uper' is invalid; it must be mask2former, fpn or semfpn"):
        load_config(None, ["model.head=uper"])
    with pytest.raises(ReinError, match=r"optim\.betas must be a list of 2 values"):
        load_config(None, ["optim.betas=[0.9]"])


def test_every_shipped_recipe_loads_and_round_trips():
    from rein_cli.config import recipes_dir

    names = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
    assert {"demo", "demo-dinov2-s"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg, name
    assert load_config("demo-dinov2-s").model.backbone == "dinov2-s"


def test_every_configuration_key_has_a_rule():
    from rein_cli.config import RULES

    def leaves(section, prefix=""):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            yield from leaves(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]

    assert set(RULES) == set(leaves(Config()))  # a new key without a rule fails here


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.head_channels=0", "model.head_channels = 0 is invalid; it must be >= 1"),
        ("model.rein.rank=-1", "model.rein.rank = -1 is invalid"),
        ("model.rein.token_length=0", "model.rein.token_length = 0 is invalid; it must be >= 2"),
        ("optim.betas=[2.0,0.999]", r"optim.betas = \(2.0, 0.999\) is invalid; it must be two values in \[0, 1\)"),
        ("model.num_classes=300", "model.num_classes = 300 is invalid; it must be null .* or between 1 and 255"),
        ("data.cat_max_ratio=0", r"data.cat_max_ratio = 0.0 is invalid; it must be in \(0, 1\]"),
        ("data.resize_ratios=[]", "data.resize_ratios = \\(\\) is invalid"),
        ("model.feature_indices=[3,2,1,0]", "model.feature_indices = \\(3, 2, 1, 0\\) is invalid"),
        ("optim.lr=1e400", "optim.lr = inf is invalid; it must be > 0"),
        ("train.seed=-1", "train.seed = -1 is invalid"),
        ("eval.stride=0", "eval.stride = 0 is invalid"),
        ("eval.window_batch=0", r"eval.window_batch = 0 is invalid; it must be null \(automatic\) or >= 1"),
        ("eval.stride=1000", "eval.stride = 1000 is larger than model.crop_size = 512"),
        ("model.backbone=' '", "model.backbone = ' ' is invalid"),
    ],
)
def test_values_no_run_can_use_are_refused_naming_the_key(override, message):
    with pytest.raises(ReinError, match=message):
        load_config(None, [override])


def test_a_recipe_that_is_not_utf8_is_a_clear_error(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("# caf\xe9\noptim: {lr: 0.001}\n".encode("latin-1"))
    with pytest.raises(ReinError, match=r"latin1.yaml is not UTF-8 text .*save it as UTF-8"):
        load_config(recipe)


def test_one_dataset_name_where_a_list_is_expected_is_a_list_of_one():
    cfg = load_config(None, ["data.train=gta5", "data.eval=cityscapes"])
    assert cfg.data.train == ("gta5",) and cfg.data.eval == ("cityscapes",)
    assert load_config(None, ["data.train=['gta5', 'synthia']"]).data.train == ("gta5", "synthia")


def test_a_recipe_inherits_from_its_base_and_states_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {backbone: dinov2-s, crop_size: 256}\ndata: {eval: [a, b]}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel: {crop_size: 128}\ndata: {eval: [c]}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.model.backbone == "dinov2-s" and cfg.model.crop_size == 128
    assert cfg.data.eval == ("c",)  # lists are replaced, not merged
    (tmp_path / "base.yaml").write_text("base: child.yaml\n")
    with pytest.raises(ReinError, match="inherits from itself"):
        load_config(tmp_path / "child.yaml")


def test_reported_figures_follow_the_adapters_schema():
    good = "reported={'cityscapes': [{'mIoU': 66.4, 'split': 'val', 'source': 'paper Table 1'}]}"
    assert load_config(None, [good]).to_dict()["reported"]["cityscapes"][0]["mIoU"] == 66.4
    for bad in ("{'cityscapes': 66.4}", "{'cityscapes': [{'mIoU': 66.4, 'split': 'train', 'source': 'x'}]}"):
        with pytest.raises(ReinError, match=r"reported = .* is invalid"):
            load_config(None, [f"reported={bad}"])


def test_the_global_batch_must_divide_into_the_accumulation_steps():
    with pytest.raises(ReinError, match=r"data\.batch_size = 4 .* train\.accumulation = 3"):
        load_config(None, ["train.accumulation=3"])
