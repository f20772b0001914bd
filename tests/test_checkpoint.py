"""Checkpoints: save -> load -> identical outputs; what is stored; safe, clear failures."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rein_cli.config import load_config
from rein_cli.engine.checkpoint import load_segmentor, save_checkpoint
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor

from .helpers import TINY_SETS


def tiny_config(pretrained: bool = False):
    return load_config(None, [*TINY_SETS, f"model.pretrained={pretrained}"])


CLASSES, PALETTE = [f"c{i}" for i in range(19)], [[i, i, i] for i in range(19)]


def build(cfg):
    return build_segmentor(cfg.model, classes=CLASSES, palette=PALETTE)


def save(model, path):
    return save_checkpoint(model, path, info={"iterations": 3})


def test_round_trip_gives_identical_outputs(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build(cfg)
    with torch.no_grad():
        model.backbone.reins.scale.fill_(0.5)  # make the Rein path matter
    path = save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["backbone"] == "vit-tiny" and config["backbone_in_checkpoint"] is True
    assert config["classes"][0] == "c0" and config["iterations"] == 3 and config["format"] == 1
    torch.manual_seed(123)  # a different seed: the random backbone must come from the file, not the seed
    loaded = load_segmentor(path)
    assert not loaded.training
    assert loaded.classes == tuple(CLASSES) and loaded.palette == tuple(tuple(c) for c in PALETTE)
    assert (
        loaded.config == model.config
        and model.config.num_classes == 19
        and (loaded.mean, loaded.std) == (model.mean, model.std)
    )
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(loaded.semantic_scores(x), model.eval().semantic_scores(x), rtol=0, atol=0)


def test_pretrained_backbones_are_not_stored(tmp_path):
    model = build(tiny_config(pretrained=False))
    model.config = dataclasses.replace(model.config, pretrained=True)  # as if the backbone had come from the Hub
    path = save(model, tmp_path / "ckpt")
    keys = set(load_file(str(path / "model.safetensors")))
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(k.startswith("backbone.vit.") for k in keys)
    assert any(k.startswith("backbone.reins.") for k in keys) and any(k.startswith("head.") for k in keys)


def test_saving_replaces_an_old_checkpoint_atomically(tmp_path):
    model = build(tiny_config())
    save(model, tmp_path / "ckpt")
    save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folders left


def test_a_save_killed_between_its_renames_is_named_then_put_back(tmp_path, monkeypatch):
    import safetensors.torch

    model = build(tiny_config())
    save(model, tmp_path / "ckpt")
    (tmp_path / "ckpt").rename(tmp_path / ".ckpt.old")  # the old one set aside, the new one not yet in place
    with pytest.raises(ReinError, match=r"ckpt was being replaced .*\.ckpt\.old: rename it to ckpt"):
        load_segmentor(tmp_path / "ckpt")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space"):  # the next save puts the old one back first, then fails
        save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert load_segmentor(tmp_path / "ckpt").classes == tuple(CLASSES)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ReinError, match="not a rein checkpoint"):
        load_segmentor(tmp_path)
    model = build(tiny_config())
    path = save(model, tmp_path / "ckpt")
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
    with pytest.raises(
        ReinError, match=r"\(timm/vit_tiny_patch16_224\.augreg_in21k_ft_in1k\) .*run `rein pull vit-tiny`"
    ):
        build_segmentor(cfg.model, download=False)


def test_loading_uses_the_stored_normalisation(tmp_path):
    path = save(build(tiny_config()), tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    assert config["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # vit-tiny's own
    config["normalization"] = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_segmentor(path, "auto")
    assert loaded.mean == (0.1, 0.2, 0.3) and loaded.std == (0.4, 0.5, 0.6)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: [1, 2], "must hold a JSON object, not list"),
        (lambda c: {k: v for k, v in c.items() if k != "model"}, "'model' must be an object"),
        (lambda c: {**c, "model": {**c["model"], "head_channels": 0}}, "model.head_channels = 0 is invalid"),
        (lambda c: {**c, "model": {**c["model"], "crop_size": "big"}}, "model.crop_size must be int"),
        (lambda c: {**c, "classes": c["classes"][:3]}, "'classes' must list 19 class names"),
        (lambda c: {**c, "palette": [[300, 0, 0]] * 19}, "'palette' must give 19 colours"),
        (lambda c: {**c, "normalization": {"mean": [0.5, 0.5], "std": [0.5, 0.5, 0.5]}}, "'normalization.mean'"),
        (lambda c: {**c, "normalization": {"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}}, r"'normalization.std'.* > 0"),
        (lambda c: {**c, "backbone_in_checkpoint": "yes"}, "'backbone_in_checkpoint' must be true or false"),
    ],
)
def test_a_damaged_config_json_names_the_file_and_the_key(tmp_path, edit, message):
    path = save(build(tiny_config()), tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(ReinError, match=rf"{path / 'config.json'}.*{message}"):
        load_segmentor(path)


def test_non_finite_weights_are_refused(tmp_path):
    path = save(build(tiny_config()), tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    state["head.classifier.weight"][0, 0] = float("nan")
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ReinError, match=r"holds NaN or infinite weights \(head.classifier.weight\)"):
        load_segmentor(path)


def test_checkpoints_get_the_usual_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save(build(tiny_config()), tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not the private 0700 of a temporary folder
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in path.iterdir())


def test_a_missing_local_weights_file_says_so(tmp_path):
    cfg = load_config(None, [*TINY_SETS, f"model.weights={tmp_path / 'nope.safetensors'}"])
    with pytest.raises(ReinError, match=r"model.weights .*nope.safetensors does not exist; give the safetensors file"):
        build_segmentor(cfg.model)


def test_a_failed_training_state_write_is_one_message_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = build(tiny_config())

    def failing_save(obj, f):  # what torch's file writer raises when the disk fills up mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 122331968 vs 122331860")

    monkeypatch.setattr(torch, "save", failing_save)
    path = tmp_path / "checkpoints" / "iter_2"
    with pytest.raises(ReinError, match=r"cannot write .*iter_2/training_state.pt: .* the disk may be full: free"):
        save_checkpoint(model, path, info={"iterations": 2}, training_state={"step": 2})
    assert list((tmp_path / "checkpoints").iterdir()) == []  # nothing half-written, no temporary folder
