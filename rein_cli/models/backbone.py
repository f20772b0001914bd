"""Frozen timm backbones with a method's adapter (Rein) after every block: a 4-level feature pyramid and queries."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.errors import ReinError, unknown_name


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone: its timm architecture and pretrained tag, the blocks the head reads, and how
    its pretrained weights are adapted (position grid resampling)."""

    family: str  # "vit" (DINOv2, CLIP, MAE), "eva", "sam" or "convnext"
    arch: str
    tag: str
    feature_indices: tuple[int, int, int, int]
    description: str
    pos_mode: str = "bicubic"  # how the pretrained position grid is resized to the crop's grid
    timm_kwargs: dict = field(default_factory=dict)

    @property
    def hub_repo(self) -> str:
        """The Hub repo timm itself loads ``arch.tag``'s weights from (its pretrained config's ``hf_hub_id``): not
        always ``timm/arch.tag`` (the QuickGELU CLIP models share the repo of the plain CLIP ones)."""
        return timm_hub_repo(f"{self.arch}.{self.tag}")


S_INDICES, L_INDICES, G_INDICES = (3, 5, 7, 11), (7, 11, 15, 23), (9, 19, 29, 39)  # 12, 24 and 40 blocks
BACKBONES: dict[str, BackboneSpec] = {
    "dinov2-s": BackboneSpec("vit", "vit_small_patch14_dinov2", "lvd142m", S_INDICES, "DINOv2 ViT-S/14, 12 x 384"),
    "dinov2-b": BackboneSpec("vit", "vit_base_patch14_dinov2", "lvd142m", S_INDICES, "DINOv2 ViT-B/14, 12 x 768"),
    "dinov2-l": BackboneSpec("vit", "vit_large_patch14_dinov2", "lvd142m", L_INDICES, "DINOv2 ViT-L/14, 24 x 1024"),
    "dinov2-g": BackboneSpec("vit", "vit_giant_patch14_dinov2", "lvd142m", G_INDICES, "DINOv2 ViT-g/14, 40 x 1536"),
    "dinov2-s-reg4": BackboneSpec(
        "vit", "vit_small_patch14_reg4_dinov2", "lvd142m", S_INDICES, "DINOv2-S, 4 registers"
    ),
    "dinov2-b-reg4": BackboneSpec("vit", "vit_base_patch14_reg4_dinov2", "lvd142m", S_INDICES, "DINOv2-B, 4 registers"),
    "dinov2-l-reg4": BackboneSpec(
        "vit", "vit_large_patch14_reg4_dinov2", "lvd142m", L_INDICES, "DINOv2-L, 4 registers"
    ),
    "dinov2-g-reg4": BackboneSpec(
        "vit", "vit_giant_patch14_reg4_dinov2", "lvd142m", G_INDICES, "DINOv2-g, 4 registers"
    ),
    "eva02-l": BackboneSpec("eva", "eva02_large_patch14_224", "mim_m38m", L_INDICES, "EVA02-L/14, MIM on Merged-38M"),
    "clip-l": BackboneSpec("vit", "vit_large_patch14_clip_quickgelu_224", "openai", L_INDICES, "CLIP L/14", "bilinear"),
    "sam-h": BackboneSpec("sam", "samvit_huge_patch16", "sa1b", (7, 15, 23, 31), "SAM ViT-H/16 encoder, 32 x 1280"),
    "mae-l": BackboneSpec("vit", "vit_large_patch16_224", "mae", L_INDICES, "MAE ViT-L/16, 24 x 1024"),
    "convnext-l": BackboneSpec("convnext", "convnext_large", "fb_in22k", (0, 1, 2, 3), "ConvNeXt-L, ImageNet-22k"),
    "vit-tiny": BackboneSpec("vit", "vit_tiny_patch16_224", "augreg_in21k_ft_in1k", (2, 5, 8, 11), "ViT-Ti/16 (demo)"),
}


@functools.cache
def timm_hub_repo(model: str) -> str:
    """``hf_hub_id`` of timm's pretrained config for ``arch.tag`` (no network: timm's registry)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    if cfg is None or not cfg.hf_hub_id:
        raise ReinError(f"timm has no Hugging Face Hub weights for {model}; a timm version with them is needed")
    return cfg.hf_hub_id


PATCH_SIZE = 16  # every ViT runs at patch 16, as in the official implementation (14 -> 16 for DINOv2, EVA02, CLIP)


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES)
    return BACKBONES[name]


# Every official Rein config normalises its inputs with ImageNet's mean and std (mmseg's SegDataPreProcessor:
# mean 123.675, 116.28, 103.53 and std 58.395, 57.12, 57.375 on 0..255 RGB; rein-facts §12), whatever the backbone
# was pretrained with; CLIP-L and EVA02-L too, for which timm gives OpenAI-CLIP's values. Here in 0..1 units.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The backbones of the official configs: in the repository (DINOv2-L, EVA02-L, CLIP-L), as release assets
# (DINOv2-S/B, ConvNeXt-L, SAM-H, CLIP-L, EVA02-L) and the paper's Table 2 rows (MAE-L).
OFFICIAL_BACKBONES = frozenset(
    {"dinov2-s", "dinov2-b", "dinov2-l", "eva02-l", "clip-l", "sam-h", "mae-l", "convnext-l"}
)


def input_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a new model of backbone ``name`` trains with, in 0..1 units: ImageNet's for the backbones of
    the official configs, as they all use; timm's pretrained config for the others (``vit-tiny``: 0.5, 0.5)."""
    if name in OFFICIAL_BACKBONES:
        return IMAGENET_MEAN, IMAGENET_STD
    from timm.models import get_pretrained_cfg

    spec = backbone_spec(name)
    cfg = get_pretrained_cfg(f"{spec.arch}.{spec.tag}")
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.mean), tuple(cfg.std)


def create_timm_model(name: str, crop_size: int, **kwargs) -> nn.Module:
    """The timm model of a named backbone, randomly initialised, without classifier; ViTs at patch 16 and the crop."""
    import timm

    spec = backbone_spec(name)
    options = {"num_classes": 0, **spec.timm_kwargs}
    if spec.family in ("vit", "eva"):
        options |= {"img_size": crop_size, "patch_size": PATCH_SIZE, "dynamic_img_size": True}
    elif spec.family == "sam":
        options |= {"img_size": crop_size}
    try:
        return timm.create_model(spec.arch, pretrained=False, **(options | kwargs))
    except TypeError as err:
        raise ReinError(f"backbone {name} ({spec.arch}) does not accept {kwargs}: {err}") from err


def feature_pyramid(maps: list[Tensor]) -> list[Tensor]:
    """Four stride-16 maps -> strides 4, 8, 16, 32 (bilinear x4, x2, x1, x0.5; align_corners False)."""
    scales = (4.0, 2.0, 1.0, 0.5)
    return [
        m if s == 1.0 else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
        for m, s in zip(maps, scales, strict=True)
    ]


class NoAdapter(nn.Module):
    """Stands in for Rein in the baselines (frozen or fully fine-tuned backbone): changes nothing, no queries.

    The adapter interface of the block loop: ``before(x, layer, num_prefix_tokens)`` on a block's input tokens
    (VPT inserts its prompts there), ``forward(x, layer, num_prefix_tokens)`` on its output, ``queries()``."""

    def before(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        return x

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        return x

    def queries(self) -> None:
        return None


class FrozenBackbone(nn.Module):
    """Common ground: the timm model never trains unless fully fine-tuned, and the pass needs no autograd
    when nothing in it requires grad (the frozen baseline).

    The method's ``adapter`` lives under the attribute ``slot``, which names its state-dict keys
    (``reins.*`` for Rein, as the official implementation names them); `adapter` reaches it whatever the name."""

    def __init__(
        self,
        model: nn.Module,
        adapter: nn.Module,
        crop_size: int,
        *,
        slot: str,
        trainable: bool = False,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.vit = model
        self.adapter_slot = slot
        self.add_module(slot, adapter)
        # activation checkpointing: each block with its Rein keeps only its input for the backward pass and runs
        # again there (less memory, about a third more compute); the outputs and gradients do not change
        self.checkpointing = False
        self.crop_size = crop_size  # training crop and slide window
        self.vit.requires_grad_(trainable)
        self.vit.eval()
        if normalization is None:  # the timm model's own (`input_normalization` gives the official one by name)
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            normalization = (cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
        self.mean, self.std = (tuple(float(v) for v in values) for values in normalization)

    @property
    def adapter(self) -> nn.Module:
        """The method's adapter: Rein, AdaptFormer, VPT's prompts or `NoAdapter` (one per stage for ConvNeXt)."""
        return self._modules[self.adapter_slot]

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        self.vit.eval()  # the pretrained model always runs in eval mode (no drop-path, fixed behaviour)
        for module in self.vit.modules():  # except what a method added inside it (LoRA's dropout)
            if getattr(module, "follows_train_mode", False):
                module.train(mode)
        return self

    def forward(self, images: Tensor) -> tuple[list[Tensor], Tensor | None]:
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        with torch.set_grad_enabled(needs_grad):
            return self._forward(images)

    def _step(self, function, *args):
        """``function(*args)``, under activation checkpointing when it is on and gradients are recorded."""
        if self.checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)


class ReinViT(FrozenBackbone):
    """A timm VisionTransformer (DINOv2, CLIP, MAE) with the ``adapter`` (Rein) applied after every block.

    ``forward(images)`` takes normalised (B, 3, H, W) images, H and W multiples of the patch size, and
    returns the pyramid [(B, C, H/4, W/4), (B, C, H/8, W/8), (B, C, H/16, W/16), (B, C, H/32, W/32)] of
    the post-Rein block outputs (no final norm, prefix tokens dropped) and the Rein queries (T, Q).
    """

    def __init__(
        self,
        vit: nn.Module,
        adapter: nn.Module,
        feature_indices: Sequence[int],
        crop_size: int,
        *,
        pyramid: bool = True,
        class_embedding_twice: bool = False,
        **options,
    ) -> None:
        super().__init__(vit, adapter, crop_size, **options)
        # False: the four stride-16 maps as they are, for a neck that resizes them (`MultiLevelNeck`)
        self.pyramid = pyramid
        # the official CLIP backbone's quirk (`rein/models/backbones/clip.py`): the class embedding is added to the
        # class token and again to the class token's position, so the class token gets it twice
        self.class_embedding_twice = class_embedding_twice
        depth = len(vit.blocks)
        indices = list(feature_indices)
        if len(indices) != 4 or indices != sorted(set(indices)) or not all(0 <= i < depth for i in indices):
            raise ReinError(f"feature_indices must be 4 increasing block indices in [0, {depth - 1}], got {indices}")
        self.feature_indices = tuple(indices)
        self.num_prefix_tokens = getattr(vit, "num_prefix_tokens", 0)
        self.embed_dim = vit.embed_dim
        self.patch_size = PATCH_SIZE
        self.out_channels = [vit.embed_dim] * 4

    def _embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int], dict]:
        """Patch embedding and positions: tokens in the blocks' layout, the patch grid, extra block arguments."""
        vit = self.vit
        x = vit.patch_embed(images)  # (B, Hp, Wp, C) with dynamic_img_size
        grid = x.shape[1:3]
        x = vit._pos_embed(x)  # (B, P+N, C): the class token (+ its position) first
        if self.class_embedding_twice:
            x = torch.cat([x[:, :1] + vit.cls_token, x[:, 1:]], dim=1)
        return vit.norm_pre(vit.patch_drop(x)), grid, {}

    def _tokens(self, x: Tensor) -> Tensor:
        return x  # (B, P+N, C) already

    def _untokens(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        return tokens

    def _block(self, block: nn.Module, i: int, x: Tensor, kwargs: dict) -> Tensor:
        """Block ``i`` and its Rein (the adapter's steps before and after the block): tokens (B, P+N, C)."""
        adapter = self.adapter
        y = adapter.before(x, i, num_prefix_tokens=self.num_prefix_tokens)
        if y is not x:
            kwargs = self._inserted(kwargs, y.shape[1] - x.shape[1])
        return adapter(self._tokens(block(y, **kwargs)), i, num_prefix_tokens=self.num_prefix_tokens)

    def _inserted(self, kwargs: dict, count: int) -> dict:
        """The block's extra arguments when the adapter inserted ``count`` tokens after the prefix tokens."""
        return kwargs

    def _forward(self, images: Tensor) -> tuple[list[Tensor], Tensor | None]:
        x, (Hp, Wp), kwargs = self._embed(images)
        maps = []
        for i, block in enumerate(self.vit.blocks):
            tokens = self._step(self._block, block, i, x, kwargs)
            x = self._untokens(tokens, (Hp, Wp))
            if i in self.feature_indices:
                feats = tokens[:, self.num_prefix_tokens :]  # (B, N, C)
                maps.append(feats.transpose(1, 2).reshape(feats.shape[0], -1, Hp, Wp))
        return feature_pyramid(maps) if self.pyramid else maps, self.adapter.queries()


class ReinEVA(ReinViT):
    """EVA02: the blocks also take the rotary position embedding of the patch grid."""

    def _embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int], dict]:
        vit = self.vit
        x = vit.patch_embed(images)
        grid = x.shape[1:3]
        x, rope = vit._pos_embed(x)
        return vit.norm_pre(x), grid, {"rope": rope}

    def _inserted(self, kwargs: dict, count: int) -> dict:
        """Tokens inserted after the prefix (VPT's prompts) are not rotated, like the prefix tokens."""
        return {**kwargs, "rope": rope_skipping(kwargs["rope"], count)} if count else kwargs


def rope_skipping(rope: Tensor, inserted: int) -> Tensor:
    """timm's concatenated (sin, cos) rotary table (..., N, 2D) with ``inserted`` rows of the identity rotation
    (sin 0, cos 1) in front. timm's EVA attention rotates the tokens after its prefix tokens; with this table,
    tokens inserted between the prefix and the patch tokens stay unrotated (as if they were prefix tokens) and
    every patch token keeps its own rotation."""
    sin, cos = rope.chunk(2, dim=-1)
    shape = (*rope.shape[:-2], inserted, sin.shape[-1])
    return torch.cat([torch.cat([sin.new_zeros(shape), cos.new_ones(shape)], dim=-1), rope], dim=-2)


class ReinSAM(ReinViT):
    """SAM's image encoder: blocks work on (B, Hp, Wp, C) maps (windowed attention), no prefix tokens."""

    def _embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int], dict]:
        from timm.layers import resample_abs_pos_embed_nhwc

        vit = self.vit
        x = vit.patch_embed(images)  # (B, Hp, Wp, C)
        x = x + resample_abs_pos_embed_nhwc(vit.pos_embed, x.shape[1:3])
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(x))), x.shape[1:3], {}

    def _tokens(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2)  # (B, Hp, Wp, C) -> (B, N, C)

    def _untokens(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        return tokens.view(tokens.shape[0], *grid, tokens.shape[-1])


class ReinConvNeXt(FrozenBackbone):
    """ConvNeXt with one Rein per stage, applied after every block of the stage (no prefix tokens).

    The pyramid (strides 4, 8, 16, 32) is the four stage outputs, each normalised over channels as the
    official model (mmpretrain's ``norm0``..``norm3``) does; the un-normalised output goes on into the next
    stage. The queries are the sum of the stages' queries.
    """

    NORM_EPS = 1e-6  # mmpretrain's LayerNorm2d, and timm's final norm

    def __init__(self, model: nn.Module, adapter: nn.ModuleList, crop_size: int, **options) -> None:
        super().__init__(model, adapter, crop_size, **options)
        if not isinstance(getattr(model.head, "norm", None), nn.LayerNorm):
            raise ReinError("ConvNeXt needs timm's final norm in its head (head_norm_first=False, the default)")
        self.patch_size = 32  # inputs must divide by the total stride
        self.out_channels = [stage.blocks[0].conv_dw.out_channels for stage in model.stages]
        self.feature_indices = (0, 1, 2, 3)

    def stage_norm(self, i: int, x: Tensor) -> Tensor:
        """The official ``norm{i}`` of stage i's output (B, C, H, W): a LayerNorm over channels, eps 1e-6.

        The pretrained checkpoint holds only the final norm (Facebook's ``norm``, timm's ``head.norm``,
        mmpretrain's ``norm3``), so the last stage uses it; ``norm0``..``norm2`` keep their initial weight 1
        and bias 0 in the official model (frozen, never trained), i.e. no affine parameters at all.
        """
        if i == len(self.vit.stages) - 1:
            return self.vit.head.norm(x)  # (B, C, H, W), timm's LayerNorm2d
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=self.NORM_EPS)  # (B, H, W, C)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)

    @staticmethod
    def _block(block: nn.Module, adapter: nn.Module, j: int, x: Tensor) -> Tensor:
        """Block ``j`` of a stage and the stage's Rein on (B, C, h, w) maps."""
        x = block(x)
        B, C, h, w = x.shape
        tokens = adapter(x.flatten(2).transpose(1, 2), j, num_prefix_tokens=0)  # (B, hw, C)
        return tokens.transpose(1, 2).reshape(B, C, h, w)

    def _forward(self, images: Tensor) -> tuple[list[Tensor], Tensor | None]:
        x = self.vit.stem(images)  # (B, C0, H/4, W/4)
        maps = []
        for i, (stage, adapter) in enumerate(zip(self.vit.stages, self.adapter, strict=True)):
            x = stage.downsample(x)  # (B, C, h, w) at stride 4, 8, 16 or 32
            for j, block in enumerate(stage.blocks):
                x = self._step(self._block, block, adapter, j, x)
            maps.append(self.stage_norm(i, x).contiguous())  # (B, C, h, w); x itself goes on un-normalised
        queries = [a.queries() for a in self.adapter]
        return maps, None if queries[0] is None else torch.stack(queries).sum(0)


FAMILIES = {"vit": ReinViT, "eva": ReinEVA, "sam": ReinSAM}
