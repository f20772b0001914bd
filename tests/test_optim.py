"""The optimizer: official parameter groups and the learning-rate schedule."""

import math

import torch

from rein_cli.engine.optim import lr_at, param_groups
from rein_cli.models.segmentor import build_segmentor


def test_poly_schedule():
    assert lr_at(0, base_lr=1e-4, max_iters=100) == 1e-4
    assert math.isclose(lr_at(50, base_lr=1e-4, max_iters=100), 1e-4 * 0.5**0.9)
    assert lr_at(100, base_lr=1e-4, max_iters=100) == 0.0
    # warmup: linear from 1e-6 x base, then poly over the remaining iterations
    assert math.isclose(lr_at(0, base_lr=6e-5, max_iters=40, warmup_iters=10), 6e-5 * 1e-6)
    assert math.isclose(lr_at(10, base_lr=6e-5, max_iters=40, warmup_iters=10), 6e-5)
    assert math.isclose(lr_at(25, base_lr=6e-5, max_iters=40, warmup_iters=10), 6e-5 * 0.5**0.9)


def test_param_groups_follow_the_official_decay_rules(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.05)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {
        "backbone.reins.learnable_tokens_a",
        "backbone.reins.learnable_tokens_b",
        "backbone.reins.scale",
    } <= no_decay_names
    assert "head.laterals.0.1.weight" in no_decay_names  # GroupNorm
    assert {
        "backbone.reins.mlp_token2feat.weight",
        "backbone.reins.mlp_delta_f.bias",
        "head.classifier.weight",
    } <= decay_names
    assert not any(n.startswith("backbone.vit") for n in decay_names | no_decay_names)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_optimizer_groups_of_the_full_model():
    with torch.device("meta"):
        model = build_segmentor("dinov2-l")
        full = build_segmentor("dinov2-s", method="full")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {(g["lr_mult"], g["weight_decay"]): {names[id(p)] for p in g["params"]} for g in param_groups(model, 0.05)}
    assert set(groups) == {(1.0, 0.05), (1.0, 0.0)}
    no_decay, decay = groups[(1.0, 0.0)], groups[(1.0, 0.05)]
    assert {
        "head.level_embed.weight",
        "head.transformer_decoder.post_norm.weight",
        "head.pixel_decoder.input_convs.0.gn.bias",
        "head.transformer_decoder.layers.3.norm2.weight",
        "backbone.reins.scale",
    } <= no_decay
    assert {"head.pixel_decoder.level_encoding.weight", "head.querys2feat.weight", "backbone.reins.merge.bias"} <= decay
    full_groups = {(g["lr_mult"], g["weight_decay"]) for g in param_groups(full, 0.05)}
    assert full_groups == {(1.0, 0.05), (1.0, 0.0), (0.1, 0.05), (0.1, 0.0)}  # backbone at a tenth of the lr


def test_the_released_full_fine_tuning_config_decays_query_feat_and_trains_the_backbone_at_full_lr():
    from rein_cli.config import load_config

    with torch.device("meta"):
        full = build_segmentor("dinov2-s", method="full")
    names = {id(p): n for n, p in full.named_parameters()}

    def groups(recipe):
        optim = load_config(recipe).optim
        built = param_groups(full, optim.weight_decay, optim.backbone_lr_mult, optim.no_decay_keys)
        return {(g["lr_mult"], g["weight_decay"]): {names[id(p)] for p in g["params"]} for g in built}

    paper, released = groups("gta-dinov2-l-full"), groups("gta-dinov2-l-full-released")
    assert set(paper) == {(1.0, 0.05), (1.0, 0.0), (0.1, 0.05), (0.1, 0.0)}  # the paper: backbone lr 1e-5
    assert "head.query_feat.weight" in paper[(1.0, 0.0)]
    assert set(released) == {(1.0, 0.05), (1.0, 0.0)}  # the released config: one lr everywhere
    assert "head.query_feat.weight" in released[(1.0, 0.05)]  # ... and query_feat decayed
    assert {"head.query_embed.weight", "head.level_embed.weight"} <= released[(1.0, 0.0)]
    assert "backbone.vit.blocks.0.norm1.weight" in released[(1.0, 0.0)]  # norms never decay
    everything_else = {n for ns in paper.values() for n in ns} - {"head.query_feat.weight"}
    assert everything_else == {n for ns in released.values() for n in ns} - {"head.query_feat.weight"}
    for (_, decay), ns in paper.items():  # besides query_feat, only the learning rates differ
        assert all(n in released[(1.0, decay)] for n in ns if n != "head.query_feat.weight")
