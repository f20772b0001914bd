"""Checkpoints: save -> load -> identical outputs; what is stored; safe, clear failures."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rein_cli.config import load_config
from rein_cli.engine.checkpoint import load_segmentor, save_checkpoint
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import segmentor_from_config

from .conftest import TINY_SETS


def tiny_config(pretrained: bool = False):
    cfg = load_config(None, TINY_SETS)
    cfg.model.pretrained = pretrained
    return cfg


def save(model, path, cfg):
    classes, palette = [f"c{i}" for i in range(19)], [[i, i, i] for i in range(19)]
    info = {"iterations": 3}
    return save_checkpoint(
        model, path, model_config=cfg.model, classes=classes, palette=palette, mean=model.mean, std=model.std, info=info
    )


def test_round_trip_gives_identical_outputs(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = segmentor_from_config(cfg.model)
    with torch.no_grad():
        model.backbone.reins.scale.fill_(0.5)  # make the Rein path matter
    path = save(model, tmp_path / "ckpt", cfg)
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["backbone"] == "vit-tiny" and config["backbone_in_checkpoint"] is True
    assert config["classes"][0] == "c0" and config["iterations"] == 3 and config["format"] == 1
    torch.manual_seed(123)  # a different seed: the random backbone must come from the file, not the seed
    loaded = load_segmentor(path)
    assert not loaded.training
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(loaded.semantic_scores(x), model.eval().semantic_scores(x), rtol=0, atol=0)


def test_pretrained_backbones_are_not_stored(tmp_path):
    cfg = tiny_config(pretrained=True)
    cfg.model.pretrained = False
    model = segmentor_from_config(cfg.model)
    cfg.model.pretrained = True  # as if the backbone had come from the Hub
    path = save(model, tmp_path / "ckpt", cfg)
    keys = set(load_file(str(path / "model.safetensors")))
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(k.startswith("backbone.vit.") for k in keys)
    assert any(k.startswith("backbone.reins.") for k in keys) and any(k.startswith("head.") for k in keys)


def test_saving_replaces_an_old_checkpoint_atomically(tmp_path):
    cfg = tiny_config()
    model = segmentor_from_config(cfg.model)
    save(model, tmp_path / "ckpt", cfg)
    save(model, tmp_path / "ckpt", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folders left


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ReinError, match="not a rein checkpoint"):
        load_segmentor(tmp_path)
    cfg = tiny_config()
    model = segmentor_from_config(cfg.model)
    path = save(model, tmp_path / "ckpt", cfg)
    state = load_file(str(path / "model.safetensors"))
    state.pop("head.classifier.weight")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ReinError, match=r"missing \['head.classifier.weight'\]"):
        load_segmentor(path)
    (path / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ReinError, match="cannot read"):
        load_segmentor(path)
    (path / "config.json").write_text("{")
    with pytest.raises(ReinError, match="not valid JSON"):
        load_segmentor(path)


def test_missing_pretrained_weights_say_how_to_get_them(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty Hub cache
    cfg = tiny_config(pretrained=True)
    with pytest.raises(ReinError, match=r"hf download timm/vit_tiny_patch16_224\.augreg_in21k_ft_in1k"):
        segmentor_from_config(cfg.model, download=False)
