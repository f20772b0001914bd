"""The shipped recipes: each loads, its published figures follow the adapters' schema, each trains (tiny sizes),
`rein train --list` shows them all, and a wrong recipe is an error naming its file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rein_cli.config import load_config, shipped_recipes
from rein_cli.errors import ReinError

from .helpers import FAMILIES, VIT, rein

RECIPES = sorted(shipped_recipes())
DEMOS = ("demo", "demo-dinov2-s")  # the demo's own recipes, older than descriptions
DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_paper_settings_are_shipped():
    assert {"gta-dinov2-l", "gta-dinov2-l-frozen", "gta-dinov2-l-full", "citys-acdc-dinov2-l"} <= set(RECIPES)
    assert all(not name.startswith("_") or name == "_gta" for name in RECIPES)  # bases: a leading underscore


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_loads_with_known_names_and_figures_in_the_adapters_schema(name):
    from rein_cli.data.registry import lookup
    from rein_cli.models.backbone import BACKBONES

    cfg = load_config(name)
    assert cfg.model.backbone in BACKBONES
    for dataset in (*cfg.data.train, *cfg.data.eval):
        assert lookup(dataset) is not None and lookup(dataset).name == dataset, dataset  # canonical names
    if name not in DEMOS:
        assert cfg.description.strip() and "\n" not in cfg.description
    for dataset, figures in cfg.reported.items():
        assert lookup(dataset) is not None and lookup(dataset).name == dataset, dataset
        for figure in figures:
            assert set(figure) == {"mIoU", "split", "source"}
            assert 0 < figure["mIoU"] < 100 and figure["split"] in ("val", "test") and figure["source"].strip()
    if cfg.reported and not name.startswith("_"):
        assert any(f["split"] == "test" for fs in cfg.reported.values() for f in fs) or set(cfg.reported) <= set(
            cfg.data.eval
        ), "a val figure for a dataset the recipe does not evaluate"


def test_the_paper_values_of_the_main_settings():
    main = load_config("gta-dinov2-l")
    assert main.to_dict()["reported"]["cityscapes"][0] == {"mIoU": 66.4, "split": "val", "source": "paper Table 2"}
    assert (main.data.train, main.data.eval) == (("gta5",), ("cityscapes", "bdd100k", "mapillary"))
    assert (main.model.crop_size, main.data.batch_size, main.train.max_iters, main.optim.lr) == (512, 4, 40000, 1e-4)
    acdc = load_config("citys-acdc-dinov2-l")
    assert (acdc.model.crop_size, acdc.data.batch_size, acdc.optim.lr, acdc.optim.warmup_iters) == (
        1024,
        8,
        6e-5,
        10000,
    )
    assert acdc.eval.stride is None and acdc.model.crop_size * 2 / 3 == pytest.approx(683, abs=0.5)
    assert acdc.data.eval == ("acdc-fog", "acdc-night", "acdc-rain", "acdc-snow", "cityscapes")
    assert load_config("gta-synthia-dinov2-l").data.train == ("gta5", "synthia")
    full, released = load_config("gta-dinov2-l-full"), load_config("gta-dinov2-l-full-released")
    assert (full.model.method, full.optim.backbone_lr_mult, "query_feat" in full.optim.no_decay_keys) == (
        "full",
        0.1,
        True,
    )
    assert (released.model.method, released.optim.backbone_lr_mult) == ("full", 1.0)
    assert "query_feat" not in released.optim.no_decay_keys and not released.reported
    assert load_config("gta-dinov2-l-frozen").model.method == "frozen"


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_trains_two_iterations_at_tiny_sizes(name, synthetic_root, tmp_path):
    from rein_cli.engine.train import train

    cfg = load_config(name)
    backbone = cfg.model.backbone
    tiny = FAMILIES.get(backbone, VIT)  # a ViT of the recipe's own family, 4 blocks of 32
    indices = "None" if backbone == "convnext-l" else "[0,1,2,3]"
    # the recipe's own method, optimiser settings and number of training sources; the rest made tiny
    sources = ["synthetic"] * len(cfg.data.train)
    overrides = [
        f"model.backbone_kwargs={tiny!r}",
        f"model.feature_indices={indices}",
        "model.pretrained=false",
        "model.crop_size=64",
        "model.head=fpn",  # the light head keeps all recipes within seconds; test_train.py trains the others' heads
        "model.head_channels=16",
        f"data.train={sources!r}",
        "data.eval=[]",
        f"data.root={synthetic_root}",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_iters=2",
        "train.log_interval=1",
        "train.device=cpu",
    ]
    small = load_config(name, overrides)
    assert (small.model.method, small.optim) == (cfg.model.method, cfg.optim)
    run = train(small, tmp_path / "run", progress=False)
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_train_list_shows_every_recipe_and_trains_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rein("train", "--list") == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert re.search(rf"^{re.escape(name)}: ", out, re.MULTILINE), name
    main = out.split("gta-dinov2-l: ", 1)[1].split("\n")[:3]
    assert "Rein + DINOv2-L" in main[0]
    assert "dinov2-l  gta5 -> cityscapes, bdd100k, mapillary  crop 512, 40000 iters, batch 4" in main[1]
    assert main[2].strip() == "reported: cityscapes 66.4 / 66.7; bdd100k 60.4 / 60.0; mapillary 66.1"
    assert "reported: acdc 77.6 test / 73.41" in out and "crop 1024, 40000 iters, batch 8" in out
    assert out.index("bases (") < out.index("_gta: ")  # bases come last, apart
    assert list(tmp_path.iterdir()) == []  # no run directory


def test_a_wrong_key_or_type_in_a_recipe_names_the_file_and_the_key(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("base: gta-dinov2-l\noptim: {lrr: 2.0e-4}\n")
    with pytest.raises(ReinError, match=r"recipe .*mine\.yaml: unknown config key .*optim\.lrr.*optim\.lr"):
        load_config(recipe)
    recipe.write_text("base: gta-dinov2-l\ntrain: {max_iters: many}\n")
    with pytest.raises(ReinError, match=r"recipe .*mine\.yaml: train\.max_iters must be int, got 'many'"):
        load_config(recipe)
    recipe.write_text("base: gta-dinov2-l\ndata: {batch_size: 0}\n")  # a range rule, checked after merging
    with pytest.raises(ReinError, match=r"recipe .*mine\.yaml: data\.batch_size = 0 is invalid"):
        load_config(recipe)
    assert load_config(recipe, ["data.batch_size=2"]).data.batch_size == 2  # an override may fix it
    (tmp_path / "parent.yaml").write_text("model: {crop: 512}\n")  # the fault is in the base: the base is named
    recipe.write_text("base: parent.yaml\n")
    with pytest.raises(ReinError, match=r"recipe .*parent\.yaml: unknown config key .*model\.crop"):
        load_config(recipe)
    with pytest.raises(ReinError, match=r"^optim\.lr = -1\.0 is invalid"):  # an override's fault names no recipe
        load_config("gta-dinov2-l", ["optim.lr=-1.0"])


def test_the_docs_name_every_shipped_recipe():
    recipes_md, configuration_md = (DOCS / "recipes.md").read_text(), (DOCS / "configuration.md").read_text()
    table = configuration_md.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    for name in RECIPES:
        assert f"`{name}`" in recipes_md, name
        assert f"`{name}`" in table, name
