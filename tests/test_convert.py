"""`rein convert`: official key names both ways, round trips to identical outputs, strict errors, safe loading,
and Meta's DINOv2 release converted exactly like the official converter."""

import json
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rein_cli.engine.checkpoint import load_segmentor
from rein_cli.engine.convert import convert, from_official, load_official_into, load_state_dict_file, to_official
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor

from .helpers import rein

# The official DINOv2-L Rein checkpoint, as key patterns with shapes (official-keys.md): 11 + 292 keys.
OFFICIAL = {
    "backbone.reins.scale": (),
    "backbone.reins.learnable_tokens_a": (24, 100, 16),
    "backbone.reins.learnable_tokens_b": (24, 16, 1024),
    "backbone.reins.mlp_token2feat.weight": (1024, 1024),
    "backbone.reins.mlp_token2feat.bias": (1024,),
    "backbone.reins.mlp_delta_f.weight": (1024, 1024),
    "backbone.reins.mlp_delta_f.bias": (1024,),
    "backbone.reins.transform.weight": (256, 1024),
    "backbone.reins.transform.bias": (256,),
    "backbone.reins.merge.weight": (256, 768),
    "backbone.reins.merge.bias": (256,),
    "decode_head.pixel_decoder.input_convs.{i3}.conv.weight": (256, 1024, 1, 1),
    "decode_head.pixel_decoder.input_convs.{i3}.conv.bias": (256,),
    "decode_head.pixel_decoder.input_convs.{i3}.gn.weight": (256,),
    "decode_head.pixel_decoder.input_convs.{i3}.gn.bias": (256,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.sampling_offsets.weight": (192, 256),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.sampling_offsets.bias": (192,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.attention_weights.weight": (96, 256),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.attention_weights.bias": (96,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.value_proj.weight": (256, 256),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.value_proj.bias": (256,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.output_proj.weight": (256, 256),
    "decode_head.pixel_decoder.encoder.layers.{i6}.self_attn.output_proj.bias": (256,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.ffn.layers.0.0.weight": (1024, 256),
    "decode_head.pixel_decoder.encoder.layers.{i6}.ffn.layers.0.0.bias": (1024,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.ffn.layers.1.weight": (256, 1024),
    "decode_head.pixel_decoder.encoder.layers.{i6}.ffn.layers.1.bias": (256,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.norms.{i2}.weight": (256,),
    "decode_head.pixel_decoder.encoder.layers.{i6}.norms.{i2}.bias": (256,),
    "decode_head.pixel_decoder.level_encoding.weight": (3, 256),
    "decode_head.pixel_decoder.lateral_convs.0.conv.weight": (256, 1024, 1, 1),
    "decode_head.pixel_decoder.lateral_convs.0.gn.weight": (256,),
    "decode_head.pixel_decoder.lateral_convs.0.gn.bias": (256,),
    "decode_head.pixel_decoder.output_convs.0.conv.weight": (256, 256, 3, 3),
    "decode_head.pixel_decoder.output_convs.0.gn.weight": (256,),
    "decode_head.pixel_decoder.output_convs.0.gn.bias": (256,),
    "decode_head.pixel_decoder.mask_feature.weight": (256, 256, 1, 1),
    "decode_head.pixel_decoder.mask_feature.bias": (256,),
    "decode_head.transformer_decoder.layers.{i9}.{attn}.attn.in_proj_weight": (768, 256),
    "decode_head.transformer_decoder.layers.{i9}.{attn}.attn.in_proj_bias": (768,),
    "decode_head.transformer_decoder.layers.{i9}.{attn}.attn.out_proj.weight": (256, 256),
    "decode_head.transformer_decoder.layers.{i9}.{attn}.attn.out_proj.bias": (256,),
    "decode_head.transformer_decoder.layers.{i9}.ffn.layers.0.0.weight": (2048, 256),
    "decode_head.transformer_decoder.layers.{i9}.ffn.layers.0.0.bias": (2048,),
    "decode_head.transformer_decoder.layers.{i9}.ffn.layers.1.weight": (256, 2048),
    "decode_head.transformer_decoder.layers.{i9}.ffn.layers.1.bias": (256,),
    "decode_head.transformer_decoder.layers.{i9}.norms.{i3}.weight": (256,),
    "decode_head.transformer_decoder.layers.{i9}.norms.{i3}.bias": (256,),
    "decode_head.transformer_decoder.post_norm.weight": (256,),
    "decode_head.transformer_decoder.post_norm.bias": (256,),
    "decode_head.level_embed.weight": (3, 256),
    "decode_head.cls_embed.weight": (20, 256),
    "decode_head.cls_embed.bias": (20,),
    "decode_head.mask_embed.{m}.weight": (256, 256),
    "decode_head.mask_embed.{m}.bias": (256,),
    "decode_head.querys2feat.weight": (256, 256),
    "decode_head.querys2feat.bias": (256,),
}
FILL = {
    "i2": range(2),
    "i3": range(3),
    "i6": range(6),
    "i9": range(9),
    "attn": ("self_attn", "cross_attn"),
    "m": (0, 2, 4),
}


def expand(patterns: dict) -> dict:
    keys = {}
    for pattern, shape in patterns.items():
        names = [pattern]
        for field, values in FILL.items():
            if "{" + field + "}" in pattern:
                names = [n.replace("{" + field + "}", str(v)) for n in names for v in values]
        keys.update(dict.fromkeys(names, shape))
    return keys


def test_our_names_translate_to_the_official_ones_exactly():
    official = expand(OFFICIAL)
    assert len(official) == 303
    with torch.device("meta"):
        model = build_segmentor("dinov2-l")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("backbone.vit.")}
    translated = {to_official(k): shape for k, shape in ours.items()}
    assert translated == official
    assert {from_official(k) for k in official} == set(ours)
    vit_keys = [k for k in model.state_dict() if k.startswith("backbone.vit.")]
    assert all(from_official(to_official(k)) == k and not to_official(k).startswith("backbone.vit") for k in vit_keys)


def official_state(model, with_backbone: bool) -> dict:
    state = model.state_dict() if with_backbone else {n: p for n, p in model.named_parameters() if p.requires_grad}
    return {to_official(k): v.detach().clone() for k, v in state.items()}


def test_round_trip_through_official_naming_gives_identical_outputs():
    source = build_segmentor(
        "dinov2-s",
        crop_size=64,
        backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2},
        feature_indices=[0, 1, 2, 3],
        rein={"token_length": 100},
    )
    with torch.no_grad():
        source.backbone.reins.scale.fill_(0.3)
    torch.manual_seed(7)
    target = build_segmentor(
        "dinov2-s",
        crop_size=64,
        backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2},
        feature_indices=[0, 1, 2, 3],
        rein={"token_length": 100},
    )
    state = official_state(source, with_backbone=True)
    state["backbone.mask_token"] = torch.zeros(1, 32)  # in every official backbone, unused
    load_official_into(target, state, with_backbone=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target.eval().semantic_scores(x), source.eval().semantic_scores(x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def dinov2_s_official(tmp_path_factory):
    """A real-size DINOv2-S Rein model and its official-format checkpoint with the backbone included."""
    torch.manual_seed(0)
    model = build_segmentor("dinov2-s", crop_size=512)
    with torch.no_grad():
        model.backbone.reins.scale.fill_(0.2)
    path = tmp_path_factory.mktemp("official") / "iter_40000_published.pth"
    torch.save({"meta": {"iter": 40000}, "state_dict": official_state(model, with_backbone=True)}, path)
    yield model, path
    shutil.rmtree(path.parent)


def test_rein_convert_round_trip_with_the_backbone(dinov2_s_official, tmp_path):
    model, path = dinov2_s_official
    assert rein("convert", path, "--backbone", "dinov2-s", "--out", tmp_path / "ckpt") == 0
    loaded = load_segmentor(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["backbone_in_checkpoint"] is True
    assert loaded.config.pretrained is False and loaded.classes[0] == "road"
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(loaded.semantic_scores(x), model.eval().semantic_scores(x), rtol=0, atol=0)


def test_strict_conversion_errors_list_the_leftovers(dinov2_s_official, tmp_path, capsys):
    _, path = dinov2_s_official
    state = load_state_dict_file(path)
    state.pop("decode_head.cls_embed.bias")
    state["decode_head.extra.weight"] = torch.zeros(2)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    assert rein("convert", broken, "--backbone", "dinov2-s", "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "decode_head.extra.weight" in err and "decode_head.cls_embed.bias" in err and not (tmp_path / "out").exists()
    assert rein("convert", path, "--backbone", "dinov2-b", "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert re.search(r"tensors have the wrong shape for this backbone: backbone\.\S+ \(.*\) \(expected \(", err), err
    assert not (tmp_path / "out").exists()


class NotATensor:
    pass


def test_files_are_loaded_safely(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": NotATensor()}, evil)
    with pytest.raises(ReinError, match="only full unpickling could load"):
        load_state_dict_file(evil)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ReinError, match="is not a state dict"):
        load_state_dict_file(listing)
    with pytest.raises(ReinError, match="checkpoint not found"):
        load_state_dict_file(tmp_path / "missing.pth")


def test_dinov2_release_is_converted_like_the_official_converter(tmp_path):
    import timm

    torch.manual_seed(0)
    meta = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).state_dict()  # 518: 37 x 37
    meta["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(meta, path)
    out = convert(path, "dinov2-s", tmp_path / "weights", crop_size=512)
    assert out.name == "dinov2-s_512.safetensors"
    converted = load_file(str(out))
    kernel = F.interpolate(meta["patch_embed.proj.weight"].float(), size=(16, 16), mode="bicubic", align_corners=False)
    grid = meta["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    grid = (
        F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 1024, 384)
    )
    assert torch.equal(converted["patch_embed.proj.weight"], kernel)
    assert torch.equal(converted["pos_embed"], torch.cat([meta["pos_embed"][:, :1], grid], 1))
    assert torch.equal(converted["blocks.11.mlp.fc2.weight"], meta["blocks.11.mlp.fc2.weight"])
    assert converted["pos_embed"].shape == (1, 1025, 384) and "mask_token" in converted  # Meta's keys, all of them
    # and the file trains: rein uses it as the backbone weights
    model = build_segmentor("dinov2-s", crop_size=512, pretrained=True, weights=str(out), head="fpn")
    assert torch.equal(model.backbone.vit.pos_embed, converted["pos_embed"])
    with pytest.raises(ReinError, match="does not match dinov2-b"):
        convert(path, "dinov2-b", tmp_path / "weights", crop_size=1024)


def test_convnext_per_stage_reins_convert_too():
    from rein_cli.engine.convert import official_model_args

    kwargs = {"depths": (1, 1, 2, 1), "dims": (16, 32, 48, 64)}
    source = build_segmentor("convnext-l", crop_size=64, backbone_kwargs=kwargs, rein={"token_length": 100})
    with torch.no_grad():  # a pretrained final norm (the last stage's) and Rein that changes the features
        source.backbone.vit.head.norm.weight.uniform_(0.5, 2.0)
        source.backbone.vit.head.norm.bias.normal_()
        for reins in source.backbone.reins:
            reins.scale.fill_(0.3)
    state = official_state(source, with_backbone=False)
    assert "backbone.reins.2.learnable_tokens_a" in state
    assert all(k.startswith(("backbone.reins.", "decode_head.")) for k in state)  # the stage norms add no keys
    assert official_model_args(state) == {"num_classes": 19, "token_length": 100, "rank": 16, "with_backbone": False}
    torch.manual_seed(3)
    target = build_segmentor("convnext-l", crop_size=64, backbone_kwargs=kwargs, rein={"token_length": 100})
    target.backbone.vit.load_state_dict(source.backbone.vit.state_dict())  # the same frozen weights, as from the Hub
    load_official_into(target, state, with_backbone=False)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target.eval().semantic_scores(x), source.eval().semantic_scores(x), rtol=0, atol=0)


def test_an_existing_checkpoint_is_replaced_only_with_overwrite(dinov2_s_official, tmp_path, capsys):
    _, path = dinov2_s_official
    out = tmp_path / "ckpt"
    assert rein("convert", path, "--backbone", "dinov2-s", "--out", out) == 0
    before = (out / "model.safetensors").read_bytes()
    assert rein("convert", path, "--backbone", "dinov2-s", "--out", out) == 1
    assert "already holds a converted model; add --overwrite" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert rein("convert", path, "--backbone", "dinov2-s", "--out", out, "--overwrite") == 0


def test_files_that_are_not_checkpoints_get_a_reason(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ReinError, match=r"empty.pth is empty \(0 bytes\)"):
        load_state_dict_file(empty)
    with pytest.raises(ReinError, match=r"is a folder; give the checkpoint file itself"):
        load_state_dict_file(tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReinError, match=r"cannot read .*junk.pth \(.+\): not a PyTorch checkpoint"):
        load_state_dict_file(junk)


def test_wrongly_shaped_official_tensors_are_named():
    from rein_cli.engine.convert import official_model_args

    state = {"decode_head.cls_embed.weight": torch.zeros(20, 256), "backbone.reins.learnable_tokens_a": torch.zeros(3)}
    with pytest.raises(ReinError, match=r"learnable_tokens_a has shape \(3,\), expected \(layers, tokens, rank\)"):
        official_model_args(state)
    with pytest.raises(ReinError, match=r"cls_embed\.weight must be"):
        official_model_args({"decode_head.cls_embed.weight": torch.zeros(20)})


def test_meta_vit_g_swiglu_names_load_into_timm():
    import timm
    from safetensors.torch import save_file

    from rein_cli.models.weights import load_backbone_weights

    assert from_official("backbone.blocks.3.mlp.w12.weight") == "backbone.vit.blocks.3.mlp.fc1.weight"
    assert from_official("backbone.blocks.3.mlp.w3.bias") == "backbone.vit.blocks.3.mlp.fc2.bias"
    kwargs = {"depth": 2, "embed_dim": 48, "num_heads": 2, "img_size": 56}
    source = timm.create_model("vit_giant_patch14_dinov2", pretrained=False, num_classes=0, **kwargs)
    meta = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in source.state_dict().items()}
    assert any("w12" in k for k in meta)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in meta.items()}, f"{tmp}/g.safetensors")
        target = timm.create_model("vit_giant_patch14_dinov2", pretrained=False, num_classes=0, **kwargs)
        load_backbone_weights(target, f"{tmp}/g.safetensors")
    torch.testing.assert_close(target.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight, rtol=0, atol=0)
