"""The backbone: feature pyramid, post-Rein features, prefix tokens, the table of named backbones."""

import torch
import torch.nn.functional as F

from rein_cli.models.backbone import BACKBONES, feature_pyramid
from rein_cli.models.segmentor import build_segmentor


def test_pyramid_strides_and_queries(tiny_model):
    features, queries = tiny_model.backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    assert queries.shape == (100, 256)


def test_pyramid_is_bilinear_resampling():
    maps = [torch.arange(16.0).reshape(1, 1, 4, 4)] * 4
    out = feature_pyramid(maps)
    assert torch.equal(out[2], maps[2])
    torch.testing.assert_close(out[3], F.avg_pool2d(maps[3], 2))  # x0.5 bilinear of a 4x4 = 2x2 block means
    assert out[0].shape[-1] == 16 and out[1].shape[-1] == 8


def test_features_are_post_rein_block_outputs_without_final_norm(tiny_model):
    vit, x = tiny_model.backbone.vit, torch.randn(1, 3, 64, 64)
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    for i, block in enumerate(vit.blocks):
        tokens = tiny_model.backbone.reins(block(tokens), i)
    expected = tokens[:, 1:].transpose(1, 2).reshape(1, 32, 4, 4)  # last feature index = last block
    features, _ = tiny_model.backbone(x)
    torch.testing.assert_close(F.interpolate(expected, scale_factor=0.5, mode="bilinear"), features[3])


def test_register_tokens_are_kept_out_of_the_features():
    model = build_segmentor(
        "dinov2-s-reg4",
        crop_size=64,
        feature_indices=[0, 1, 2, 3],
        head_channels=16,
        backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2},
    )
    assert model.backbone.num_prefix_tokens == 5
    features, _ = model.backbone(torch.randn(1, 3, 64, 64))
    assert features[2].shape == (1, 32, 4, 4)


def test_backbone_table():
    assert BACKBONES["dinov2-s"].feature_indices == (3, 5, 7, 11)
    assert BACKBONES["dinov2-g"].feature_indices == (9, 19, 29, 39)
    assert BACKBONES["dinov2-l"].hub_repo == "timm/vit_large_patch14_dinov2.lvd142m"
