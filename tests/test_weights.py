"""Pretrained backbone weights resized the official way (plain bicubic), for every backbone family."""

import pytest
import torch
import torch.nn.functional as F

from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor
from rein_cli.models.weights import load_backbone_weights, resize_patch_embed, resize_pos_embed

from .helpers import FAMILIES, tiny_family


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
    expected = (
        F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 8)
    )
    torch.testing.assert_close(out[:, 1:], expected)
    # a 2x2 grid of one value per quadrant: bicubic upsampling keeps each corner's value at the corner
    quad = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    up = resize_pos_embed(quad, (4, 4), num_prefix=0).reshape(4, 4)
    assert up[0, 0] < up[0, 3] < up[3, 3] and up[0, 0] < up[3, 0]


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


def test_pretrained_weights_load_with_the_official_conversion(tmp_path):
    import timm
    from safetensors.torch import save_file

    kwargs = {"depth": 4, "embed_dim": 32, "num_heads": 2}
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=70, num_classes=0, **kwargs)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    model = build_segmentor(
        "dinov2-s",
        crop_size=64,
        pretrained=True,
        weights=str(tmp_path / "model.safetensors"),
        feature_indices=[0, 1, 2, 3],
        backbone_kwargs=kwargs,
    )
    vit = model.backbone.vit
    torch.testing.assert_close(vit.patch_embed.proj.weight, resize_patch_embed(state["patch_embed.proj.weight"], 16))
    torch.testing.assert_close(vit.pos_embed, resize_pos_embed(state["pos_embed"], (4, 4), 1))
    torch.testing.assert_close(vit.blocks[3].mlp.fc2.weight, state["blocks.3.mlp.fc2.weight"])
    with pytest.raises(ReinError, match="lack"):
        (tmp_path / "partial.safetensors").write_bytes(b"")
        save_file({"cls_token": state["cls_token"]}, str(tmp_path / "partial.safetensors"))
        load_backbone_weights(vit, tmp_path / "partial.safetensors")


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_pretrained_weights_of_every_family_load_through_the_conversion(backbone, tmp_path):
    """A timm checkpoint at the model's native size (patch 14 / 224, SAM's 1024 grid) loads into the crop-64 model."""
    import timm
    from safetensors.torch import save_file

    from rein_cli.models.backbone import backbone_spec

    spec = backbone_spec(backbone)
    source = timm.create_model(spec.arch, pretrained=False, num_classes=0, **FAMILIES[backbone]).state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, str(tmp_path / "w.safetensors"))
    model = tiny_family(backbone, pretrained=True, weights=str(tmp_path / "w.safetensors"))
    own = model.backbone.vit.state_dict()
    changed = sorted(k for k in source if k in own and own[k].shape != source[k].shape)
    expected = {
        "vit": {"patch_embed.proj.weight", "pos_embed"},
        "eva": {"patch_embed.proj.weight", "pos_embed"},
        "sam": {"pos_embed"} | {k for k in source if "rel_pos" in k and k.startswith(("blocks.1.", "blocks.3."))},
        "convnext": set(),
    }[spec.family]
    if backbone == "mae-l":  # already patch 16
        expected = {"pos_embed"}
    assert set(changed) == expected
    unchanged = next(k for k in source if k.endswith("weight") and k not in expected and k in own)
    assert torch.equal(own[unchanged], source[unchanged])
    assert model(torch.randn(1, 3, 64, 64))[0][-1].isfinite().all()
