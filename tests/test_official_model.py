"""The model as the official code computes it: ImageNet normalisation for every backbone of the official configs,
and the official frozen CLIP-L baseline (the class embedding twice, mmseg's MultiLevelNeck before the head), each
checked against a definition written here."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rein_cli.config import load_config
from rein_cli.engine.checkpoint import load_segmentor, save_checkpoint
from rein_cli.engine.convert import from_official, to_official
from rein_cli.errors import ReinError
from rein_cli.models.backbone import BACKBONES, input_normalization
from rein_cli.models.segmentor import build_segmentor, count_parameters

from .helpers import FAMILIES, VIT, rein

# The data preprocessor of each official model config (mean and std on 0..255 RGB), as written in the official
# repository's configs/_base_/models/*.py, and the backbone each builds.
OFFICIAL_CONFIGS = {
    "clip-L_mask2former.py": ("clip-l", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
    "rein_eva02-L_mask2former.py": ("eva02-l", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
    "rein_dinov2_mask2former.py": ("dinov2-l", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
    "dinov2_mask2former.py": ("dinov2-l", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
}
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # timm's, not official


def tiny_clip(**settings):
    torch.manual_seed(0)
    return build_segmentor("clip-l", crop_size=64, backbone_kwargs=VIT, feature_indices=[0, 1, 2, 3], **settings)


# ---- normalisation


@pytest.mark.parametrize("config", sorted(OFFICIAL_CONFIGS))
def test_each_official_config_normalises_as_its_backbone_trains_here(config):
    backbone, mean, std = OFFICIAL_CONFIGS[config]
    ours_mean, ours_std = input_normalization(backbone)
    assert [round(v * 255, 6) for v in ours_mean] == mean and [round(v * 255, 6) for v in ours_std] == std
    kwargs = {"backbone_kwargs": FAMILIES.get(backbone, VIT), "feature_indices": [0, 1, 2, 3]}
    model = build_segmentor(backbone, crop_size=64, **kwargs)  # a new model trains with it
    assert [round(v * 255, 6) for v in model.mean] == mean and [round(v * 255, 6) for v in model.std] == std


def test_clip_and_eva02_no_longer_train_with_timms_openai_values_and_the_others_keep_timms():
    for name in ("clip-l", "eva02-l", "sam-h", "mae-l", "convnext-l", "dinov2-s", "dinov2-b"):
        assert input_normalization(name) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), name
        assert input_normalization(name) != OPENAI_CLIP
    assert input_normalization("vit-tiny") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # no official config: timm's own
    assert set(BACKBONES) >= {"dinov2-g", "dinov2-l-reg4"}  # not official either: timm's, ImageNet's for these
    assert input_normalization("dinov2-l-reg4") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_a_trained_clip_checkpoint_records_imagenet_and_an_older_one_keeps_what_it_recorded(synthetic_root, tmp_path):
    from rein_cli.engine.train import train

    overrides = [
        f"model.backbone_kwargs={VIT!r}",
        "model.feature_indices=[0,1,2,3]",
        "model.pretrained=false",
        "model.crop_size=64",
        "model.head=fpn",
        "model.head_channels=16",
        "data.train=['synthetic']",
        "data.eval=[]",
        f"data.root={synthetic_root}",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_iters=1",
        "train.device=cpu",
    ]
    cfg = load_config("gta-clip-l", overrides)  # Rein + CLIP-L, as the recipe trains it
    run = train(cfg, tmp_path / "run", progress=False)
    saved = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    assert saved["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    # a checkpoint of an earlier rein recorded OpenAI-CLIP's values: loading keeps them
    older = tmp_path / "older"
    save_checkpoint(tiny_clip(method="frozen"), older)
    config = json.loads((older / "config.json").read_text())
    config["normalization"] = {"mean": list(OPENAI_CLIP[0]), "std": list(OPENAI_CLIP[1])}
    for key in ("neck", "class_embedding_twice"):  # an older config.json has neither key
        del config["model"][key]
    (older / "config.json").write_text(json.dumps(config))
    loaded = load_segmentor(older)
    assert (loaded.mean, loaded.std) == OPENAI_CLIP
    assert loaded.config.neck == "none" and loaded.config.class_embedding_twice is False


# ---- the official frozen CLIP-L: the class embedding twice


def official_clip_features(vit, images, indices):
    """The official CLIPVisionTransformer's forward (rein/models/backbones/clip.py), from its definition: patch
    conv; the class token is the class embedding, its position the position embedding's first row plus the class
    embedding again; the patches get the position grid; ln_pre; the blocks; the patch tokens of blocks ``indices``
    as (B, C, h, w) maps."""
    B = images.shape[0]
    patches = F.conv2d(images, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=16)  # (B, C, h, w)
    C, h, w = patches.shape[1:]
    class_embedding, pos = vit.cls_token.reshape(C), vit.pos_embed.reshape(-1, C)
    cls = (class_embedding + (pos[0] + class_embedding)).expand(B, 1, C)
    x = torch.cat([cls, patches.flatten(2).transpose(1, 2) + pos[1:]], dim=1)
    x = vit.norm_pre(x)
    maps = []
    for i, block in enumerate(vit.blocks):
        x = block(x)
        if i in indices:
            maps.append(x[:, 1:].transpose(1, 2).reshape(B, C, h, w))
    return maps


def test_the_frozen_baseline_adds_the_class_embedding_twice_as_the_official_clip_does():
    model = tiny_clip(method="frozen", neck="multilevel", class_embedding_twice=True).eval().double()
    with torch.no_grad():  # a random model whose class token matters: every weight drawn wide
        for p in model.backbone.vit.parameters():
            p.normal_(0, 0.3)
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        maps, queries = model.backbone(images)
        expected = official_clip_features(model.backbone.vit, images, (0, 1, 2, 3))
    assert queries is None and [m.shape for m in maps] == [(2, 32, 4, 4)] * 4  # stride 16: the neck resizes them
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    once = tiny_clip(method="frozen", neck="multilevel").eval().double()  # the same weights, the embedding once
    once.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (once.backbone(images)[0][0] - maps[0]).abs().max() > 0.01


def test_reins_clip_keeps_timms_embedding_the_class_embedding_once():
    model = tiny_clip().eval()  # method rein, as the released rein-clip-l-gta converts to
    assert model.config.class_embedding_twice is False and model.backbone.class_embedding_twice is False
    vit = model.backbone.vit
    with torch.no_grad():
        vit.cls_token.normal_()
        x = torch.randn(1, 3, 64, 64)
        tokens, _, _ = model.backbone._embed(x)
        timm_tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    torch.testing.assert_close(tokens, timm_tokens, rtol=0, atol=0)


def test_the_class_embedding_twice_is_clips_alone():
    with pytest.raises(ReinError, match=r"class_embedding_twice .*clip-l only, not dinov2-s: leave it false"):
        build_segmentor("dinov2-s", crop_size=64, backbone_kwargs=VIT, class_embedding_twice=True)
    with pytest.raises(ReinError, match=r"model.neck = multilevel .*convnext-l's stages .*leave model.neck at none"):
        build_segmentor("convnext-l", crop_size=64, backbone_kwargs=FAMILIES["convnext-l"], neck="multilevel")
    with pytest.raises(ReinError, match=r"neck = 'fpn' is invalid; it must be none or multilevel"):
        build_segmentor("vit-tiny", crop_size=64, neck="fpn")


# ---- the official frozen CLIP-L: mmseg's MultiLevelNeck


def bilinear(x, scale):
    """PyTorch's bilinear resize by ``scale`` (align_corners False), from its definition: output pixel d reads the
    source at (d + 0.5) / scale - 0.5, clamped at 0, between its two neighbours."""

    def axis(n_in):
        n_out = math.floor(n_in * scale)
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) / scale - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo).to(x.dtype)

    (y0, y1, wy), (x0, x1, wx) = axis(x.shape[-2]), axis(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def conv(x, weight, bias):
    """A stride-1 convolution with zero padding k // 2, as a sum over the kernel's offsets."""
    k = weight.shape[-1]
    padded = F.pad(x, [k // 2] * 4)
    H, W = x.shape[-2:]
    out = bias.view(1, -1, 1, 1).expand(x.shape[0], -1, H, W).clone()
    for dy in range(k):
        for dx in range(k):
            out += torch.einsum("oc,bchw->bohw", weight[:, :, dy, dx], padded[..., dy : dy + H, dx : dx + W])
    return out


def test_the_neck_computes_mmsegs_multilevel_neck():
    model = tiny_clip(method="frozen", neck="multilevel", class_embedding_twice=True)
    neck = model.neck
    maps = [torch.randn(2, 32, 4, 4, dtype=torch.float64) for _ in range(4)]
    neck.double()
    with torch.no_grad():
        ours = neck(maps)
    for i, (x, scale) in enumerate(zip(maps, (4, 2, 1, 0.5), strict=True)):
        lateral, out = neck.lateral_convs[i].conv, neck.convs[i].conv
        expected = conv(bilinear(conv(x, lateral.weight, lateral.bias), scale), out.weight, out.bias)
        assert ours[i].shape == (2, 32, int(4 * scale), int(4 * scale))
        torch.testing.assert_close(ours[i], expected, rtol=1e-10, atol=1e-10)


def test_the_neck_has_the_official_keys_shapes_and_initialisation():
    with torch.device("meta"):
        model = build_segmentor("clip-l", method="frozen", neck="multilevel", class_embedding_twice=True)
    neck = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("neck.")}
    expected = {}
    for i in range(4):
        expected[f"neck.lateral_convs.{i}.conv.weight"] = (1024, 1024, 1, 1)
        expected[f"neck.convs.{i}.conv.weight"] = (1024, 1024, 3, 3)
        expected[f"neck.lateral_convs.{i}.conv.bias"] = expected[f"neck.convs.{i}.conv.bias"] = (1024,)
    assert neck == expected
    assert all(to_official(k) == k and from_official(k) == k for k in neck)  # mmseg's names, unchanged both ways
    assert count_parameters(model.neck) == 4 * (1024 * 1024 + 1024) + 4 * (9 * 1024 * 1024 + 1024) == 41_951_232
    assert count_parameters(model.backbone, True) == 0
    assert model.head.pixel_decoder.lateral_conv.conv.in_channels == 1024  # the head reads the neck's 1024 channels
    small = tiny_clip(method="frozen", neck="multilevel", class_embedding_twice=True).neck
    for m in (small.lateral_convs[0].conv, small.convs[3].conv):  # Xavier-uniform, gain 1; zero bias
        fan_in, fan_out = m.weight[0].numel(), m.weight.shape[0] * m.weight[0, 0].numel()
        assert m.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) and not m.bias.any()


def test_the_baseline_trains_the_neck_and_head_saves_and_loads(tmp_path):
    model = tiny_clip(method="frozen", neck="multilevel", class_embedding_twice=True, head="fpn", head_channels=16)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"neck", "head"}
    model.train()
    loss = model.training_loss(torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64)))["loss_ce"]
    loss.backward()
    assert model.neck.convs[0].conv.weight.grad is not None
    path = save_checkpoint(model, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())["model"]
    assert (config["neck"], config["class_embedding_twice"]) == ("multilevel", True)
    loaded = load_segmentor(path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.semantic_scores(x), model.eval().semantic_scores(x), rtol=0, atol=0)


def test_the_recipe_is_the_official_config(capsys, tmp_path, monkeypatch):
    cfg = load_config("gta-clip-l-frozen")
    model = cfg.model
    assert (model.backbone, model.method, model.neck, model.class_embedding_twice) == (
        "clip-l",
        "frozen",
        "multilevel",
        True,
    )
    assert (model.head, model.crop_size, cfg.data.train, cfg.train.max_iters) == ("mask2former", 512, ("gta5",), 40000)
    assert [f["mIoU"] for f in cfg.reported["cityscapes"]] == [53.7, 51.49]
    monkeypatch.chdir(tmp_path)
    assert rein("train", "--list") == 0
    assert "reported: cityscapes 53.7 / 51.49; bdd100k 48.7 / 49.51; mapillary 55.0 / 55.55" in capsys.readouterr().out
