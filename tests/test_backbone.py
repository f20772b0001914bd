"""The backbone: feature pyramid, post-Rein features, prefix tokens, ConvNeXt's stage norms, the table of backbones."""

import pytest
import torch
import torch.nn.functional as F

from rein_cli.errors import ReinError
from rein_cli.models.backbone import BACKBONES, feature_pyramid
from rein_cli.models.segmentor import build_segmentor

from .helpers import FAMILIES, tiny_family


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


def channel_norm(x, weight=None, bias=None):
    """LayerNorm over the channels of (B, C, H, W), eps 1e-6, by the definition."""
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-6)
    return y if weight is None else y * weight[:, None, None] + bias[:, None, None]


def test_convnext_pyramid_is_the_stage_outputs_normalised_as_the_official_model_does():
    body = tiny_family("convnext-l").backbone
    final = body.vit.head.norm  # the pretrained final norm: the official norm3
    torch.manual_seed(1)
    with torch.no_grad():
        final.weight.uniform_(0.5, 2.0)
        final.bias.normal_()
        for reins in body.reins:
            reins.scale.fill_(0.3)
    x = torch.randn(2, 3, 64, 96)
    entering = []  # what stages 1..3 receive
    hooks = [s.downsample.register_forward_pre_hook(lambda m, a: entering.append(a[0])) for s in body.vit.stages[1:]]
    features, queries = body(x)
    for hook in hooks:
        hook.remove()

    y, expected, outputs = body.vit.stem(x), [], []
    for i, stage in enumerate(body.vit.stages):
        y = stage.downsample(y)
        for j, block in enumerate(stage.blocks):
            y = block(y)
            B, C, H, W = y.shape
            y = body.reins[i](y.flatten(2).transpose(1, 2), j, num_prefix_tokens=0).transpose(1, 2).reshape(B, C, H, W)
        outputs.append(y)  # (B, C, H, W), un-normalised
        expected.append(channel_norm(y, final.weight, final.bias) if i == 3 else channel_norm(y))

    assert [tuple(f.shape) for f in features] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 48, 4, 6), (2, 64, 2, 3)]
    for feature, want in zip(features, expected, strict=True):
        torch.testing.assert_close(feature, want)
    for got, want in zip(entering, outputs[:3], strict=True):  # the un-normalised output goes on
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(queries, sum(reins.queries() for reins in body.reins))
    assert not any(name.startswith("norm") for name in body.state_dict())  # no parameters added


def test_convnext_without_the_final_norm_is_refused():
    with pytest.raises(ReinError, match="final norm"):
        build_segmentor("convnext-l", crop_size=64, backbone_kwargs={**FAMILIES["convnext-l"], "head_norm_first": True})


def test_backbone_table():
    assert BACKBONES["dinov2-s"].feature_indices == (3, 5, 7, 11)
    assert BACKBONES["dinov2-g"].feature_indices == (9, 19, 29, 39)
    assert BACKBONES["dinov2-l"].hub_repo == "timm/vit_large_patch14_dinov2.lvd142m"
