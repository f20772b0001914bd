"""The frozen backbone: a timm ViT with Rein after every block, giving a 4-level feature pyramid and queries."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.errors import ReinError, unknown_name


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone: its timm architecture and pretrained tag, and the blocks the head reads."""

    arch: str
    tag: str
    feature_indices: tuple[int, int, int, int]
    description: str

    @property
    def hub_repo(self) -> str:
        return f"timm/{self.arch}.{self.tag}"


BACKBONES: dict[str, BackboneSpec] = {
    "dinov2-s": BackboneSpec("vit_small_patch14_dinov2", "lvd142m", (3, 5, 7, 11), "DINOv2 ViT-S/14, 12 x 384"),
    "dinov2-b": BackboneSpec("vit_base_patch14_dinov2", "lvd142m", (3, 5, 7, 11), "DINOv2 ViT-B/14, 12 x 768"),
    "dinov2-l": BackboneSpec("vit_large_patch14_dinov2", "lvd142m", (7, 11, 15, 23), "DINOv2 ViT-L/14, 24 x 1024"),
    "dinov2-g": BackboneSpec("vit_giant_patch14_dinov2", "lvd142m", (9, 19, 29, 39), "DINOv2 ViT-g/14, 40 x 1536"),
    "dinov2-s-reg4": BackboneSpec("vit_small_patch14_reg4_dinov2", "lvd142m", (3, 5, 7, 11), "DINOv2 ViT-S/14 + 4 registers"),
    "dinov2-b-reg4": BackboneSpec("vit_base_patch14_reg4_dinov2", "lvd142m", (3, 5, 7, 11), "DINOv2 ViT-B/14 + 4 registers"),
    "dinov2-l-reg4": BackboneSpec("vit_large_patch14_reg4_dinov2", "lvd142m", (7, 11, 15, 23), "DINOv2 ViT-L/14 + 4 registers"),
    "dinov2-g-reg4": BackboneSpec("vit_giant_patch14_reg4_dinov2", "lvd142m", (9, 19, 29, 39), "DINOv2 ViT-g/14 + 4 registers"),
    "vit-tiny": BackboneSpec("vit_tiny_patch16_224", "augreg_in21k_ft_in1k", (2, 5, 8, 11), "ViT-Ti/16, 12 x 192 (the demo's)"),
}  # fmt: skip

PATCH_SIZE = 16  # every ViT runs at patch 16, as in the official implementation (14 -> 16 for DINOv2)


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES)
    return BACKBONES[name]


def create_vit(name: str, crop_size: int, **kwargs) -> nn.Module:
    """The timm model of a named backbone at patch 16 and ``crop_size``, randomly initialised, no classifier."""
    import timm

    spec = backbone_spec(name)
    options = dict(img_size=crop_size, patch_size=PATCH_SIZE, num_classes=0, dynamic_img_size=True) | kwargs
    try:
        return timm.create_model(spec.arch, pretrained=False, **options)
    except TypeError as err:
        raise ReinError(f"backbone {name} ({spec.arch}) does not accept {kwargs}: {err}") from err


def feature_pyramid(maps: list[Tensor]) -> list[Tensor]:
    """Four stride-16 maps -> strides 4, 8, 16, 32 (bilinear x4, x2, x1, x0.5; align_corners False)."""
    scales = (4.0, 2.0, 1.0, 0.5)
    return [
        m if s == 1.0 else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
        for m, s in zip(maps, scales, strict=True)
    ]


class ReinViT(nn.Module):
    """A frozen timm VisionTransformer with ``reins`` applied after every block.

    ``forward(images)`` takes normalised (B, 3, H, W) images, H and W multiples of the patch size, and
    returns the pyramid [(B, C, H/4, W/4), (B, C, H/8, W/8), (B, C, H/16, W/16), (B, C, H/32, W/32)]
    of the post-Rein block outputs (no final norm, prefix tokens dropped) and the Rein queries (T, Q).
    The ViT stays in eval mode and never requires grad; gradients still flow through it to earlier Reins.
    """

    def __init__(self, vit: nn.Module, reins: nn.Module, feature_indices: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if (
            len(feature_indices) != 4
            or list(feature_indices) != sorted(set(feature_indices))
            or not all(0 <= i < depth for i in feature_indices)
        ):
            raise ReinError(
                f"feature_indices must be 4 increasing block indices in [0, {depth - 1}], got {list(feature_indices)}"
            )
        self.vit = vit
        self.reins = reins
        self.feature_indices = tuple(feature_indices)
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.embed_dim = vit.embed_dim
        self.patch_size = vit.patch_embed.patch_size[0]
        self.crop_size = vit.patch_embed.img_size[0]  # training crop and slide window
        self.mean = tuple(vit.pretrained_cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(vit.pretrained_cfg.get("std", (0.229, 0.224, 0.225)))
        self.vit.requires_grad_(False)
        self.vit.eval()

    def train(self, mode: bool = True) -> ReinViT:
        super().train(mode)
        self.vit.eval()  # the frozen ViT always runs in eval mode
        return self

    def forward(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        vit = self.vit
        x = vit.patch_embed(images)  # (B, Hp, Wp, C) with dynamic_img_size
        B, Hp, Wp, C = x.shape
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))  # (B, P+N, C)
        maps = []
        for i, block in enumerate(vit.blocks):
            x = self.reins(block(x), i, num_prefix_tokens=self.num_prefix_tokens)
            if i in self.feature_indices:
                feats = x[:, self.num_prefix_tokens :]  # (B, N, C)
                maps.append(feats.transpose(1, 2).reshape(B, C, Hp, Wp))
        return feature_pyramid(maps), self.reins.queries()
