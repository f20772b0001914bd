"""The segmentor: pyramid shapes, freezing, padding, and pretrained weights resized the official way."""

import pytest
import torch
import torch.nn.functional as F

from rein_cli.errors import ReinError
from rein_cli.models.backbone import BACKBONES, feature_pyramid
from rein_cli.models.segmentor import build_segmentor, count_parameters
from rein_cli.models.weights import load_backbone_weights, resize_patch_embed, resize_pos_embed

from .conftest import TINY


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
    model = build_segmentor("dinov2-s-reg4", crop_size=64, feature_indices=[0, 1, 2, 3], head_channels=16,
                            backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2})  # fmt: skip
    assert model.backbone.num_prefix_tokens == 5
    features, _ = model.backbone(torch.randn(1, 3, 64, 64))
    assert features[2].shape == (1, 32, 4, 4)


def test_only_rein_and_head_train_and_the_backbone_never_changes(tiny_model):
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.reins", "head.laterals", "head.fuse", "head.classifier"}
    before = {k: v.clone() for k, v in tiny_model.backbone.vit.state_dict().items()}
    rein_before = tiny_model.backbone.reins.learnable_tokens_a.clone()
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    tiny_model.train()
    assert not tiny_model.backbone.vit.training and tiny_model.head.training
    loss = tiny_model.training_loss(torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64)))["loss_ce"]
    loss.backward()
    optimizer.step()
    for key, value in tiny_model.backbone.vit.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in tiny_model.backbone.vit.parameters())
    assert not torch.equal(tiny_model.backbone.reins.learnable_tokens_a, rein_before)  # gradient reached layer-0 tokens


def test_semantic_scores_pad_to_the_patch_size_and_are_probabilities(tiny_model):
    scores = tiny_model.eval().semantic_scores(torch.randn(1, 3, 70, 90))
    assert scores.shape == (1, 19, 70, 90)
    torch.testing.assert_close(scores.sum(1), torch.ones(1, 70, 90))


def test_unknown_names_and_bad_sizes_are_clear_errors():
    with pytest.raises(ReinError, match=r'unknown backbone "dinov2-xl".*did you mean "dinov2-l"'):
        build_segmentor("dinov2-xl")
    with pytest.raises(ReinError, match="multiple of 16"):
        build_segmentor("vit-tiny", crop_size=100)
    with pytest.raises(ReinError, match="feature_indices"):
        build_segmentor(**{**TINY, "feature_indices": [0, 1, 2, 9]})


def test_dinov2_large_shapes_without_weights():
    # Real DINOv2-L geometry on the meta device: no memory, no download.
    with torch.device("meta"):
        model = build_segmentor("dinov2-l", crop_size=512)
    assert count_parameters(model.backbone.reins, True) == 2_990_081
    assert count_parameters(model.backbone.vit) == 304_199_680 - 1024  # the official count includes mask_token
    assert model.backbone.feature_indices == (7, 11, 15, 23)
    assert model.backbone.vit.pos_embed.shape == (1, 1025, 1024)


def test_backbone_table():
    assert BACKBONES["dinov2-s"].feature_indices == (3, 5, 7, 11)
    assert BACKBONES["dinov2-g"].feature_indices == (9, 19, 29, 39)
    assert BACKBONES["dinov2-l"].hub_repo == "timm/vit_large_patch14_dinov2.lvd142m"


def test_patch_kernel_resize_is_plain_bicubic_without_rescaling():
    constant = torch.full((2, 3, 14, 14), 0.5)
    torch.testing.assert_close(resize_patch_embed(constant, 16), torch.full((2, 3, 16, 16), 0.5))  # no (14/16)^2
    kernel = torch.randn(4, 3, 14, 14)
    expected = F.interpolate(kernel, size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resize_patch_embed(kernel, 16), expected)


def test_position_grid_resize_keeps_the_prefix():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = resize_pos_embed(pos, (32, 32), num_prefix=1)
    assert out.shape == (1, 1 + 32 * 32, 8)
    assert torch.equal(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 8)
    torch.testing.assert_close(out[:, 1:], expected)
    # a 2x2 grid of one value per quadrant: bicubic upsampling keeps each corner's value at the corner
    quad = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    up = resize_pos_embed(quad, (4, 4), num_prefix=0).reshape(4, 4)
    assert up[0, 0] < up[0, 3] < up[3, 3] and up[0, 0] < up[3, 0]


def test_pretrained_weights_load_with_the_official_conversion(tmp_path):
    import timm
    from safetensors.torch import save_file

    kwargs = {"depth": 4, "embed_dim": 32, "num_heads": 2}
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=70, num_classes=0, **kwargs)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    model = build_segmentor("dinov2-s", crop_size=64, pretrained=True, weights=str(tmp_path / "model.safetensors"),
                            feature_indices=[0, 1, 2, 3], backbone_kwargs=kwargs)  # fmt: skip
    vit = model.backbone.vit
    torch.testing.assert_close(vit.patch_embed.proj.weight, resize_patch_embed(state["patch_embed.proj.weight"], 16))
    torch.testing.assert_close(vit.pos_embed, resize_pos_embed(state["pos_embed"], (4, 4), 1))
    torch.testing.assert_close(vit.blocks[3].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"])
    with pytest.raises(ReinError, match="lack"):
        (tmp_path / "partial.safetensors").write_bytes(b"")
        save_file({"cls_token": state["cls_token"]}, str(tmp_path / "partial.safetensors"))
        load_backbone_weights(vit, tmp_path / "partial.safetensors")


def test_bicubic_resizing_by_hand():
    # Keys' cubic kernel (a = -0.75), align_corners False, border taps clamped: a 2-wide ramp [0, 1] sampled
    # at input positions -0.25, 0.25, 0.75, 1.25 gives W(1.25), W(0.75) + W(1.75), and the mirror images.
    ramp = [-0.10546875, 0.2265625, 0.7734375, 1.10546875]
    pos = torch.tensor([[9.0], [0.0], [1.0], [0.0], [1.0]]).view(1, 5, 1)  # a prefix token, then the 2x2 grid
    out = resize_pos_embed(pos, (4, 4), num_prefix=1)
    assert out[0, 0, 0] == 9.0
    torch.testing.assert_close(out[0, 1:, 0].view(4, 4), torch.tensor([ramp] * 4))
    kernel = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(resize_patch_embed(kernel, 4)[0, 0], torch.tensor([ramp] * 4))
