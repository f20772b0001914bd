"""The segmentor: backbone (frozen ViT + Rein) and a swappable head, and `build_segmentor` that composes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.config import ModelConfig
from rein_cli.errors import ReinError, unknown_name
from rein_cli.models.backbone import (
    FAMILIES,
    PATCH_SIZE,
    FrozenBackbone,
    NoAdapter,
    ReinConvNeXt,
    backbone_spec,
    create_timm_model,
)
from rein_cli.models.fpn_head import FPNHead
from rein_cli.models.mask2former import Mask2FormerHead
from rein_cli.models.rein import LoRAReins, Reins

METHODS = ("rein", "frozen", "full")  # Rein; the frozen backbone alone; full fine-tuning (backbone lr x 0.1)
HEADS = ("mask2former", "fpn")


class Segmentor(nn.Module):
    """``backbone(images) -> (pyramid, queries)``, then ``head(pyramid, queries)``.

    Inputs are normalised (B, 3, H, W) images. ``semantic_scores`` pads them to a multiple of the
    patch size and returns (B, K, H, W) per-class scores; ``training_loss`` returns named loss terms.
    """

    def __init__(self, backbone: FrozenBackbone, head: nn.Module, *, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.mean, self.std = backbone.mean, backbone.std  # the backbone's input normalisation (0..1 units)
        self.crop_size = backbone.crop_size

    def forward(self, images: Tensor):
        features, queries = self.backbone(images)
        return self.head(features, queries)

    def semantic_scores(self, images: Tensor) -> Tensor:
        H, W = images.shape[-2:]
        p = self.backbone.patch_size
        pad_h, pad_w = -H % p, -W % p
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))  # zeros = the mean colour after normalisation
        scores = self.head.semantic_scores(self(images), images.shape[-2:])
        return scores[..., :H, :W]

    def training_loss(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return self.head.loss(self(images), labels)


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The parameters that training changes (Rein and head), by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def build_segmentor(
    backbone: str = "dinov2-l",
    *,
    method: str = "rein",
    head: str = "mask2former",
    num_classes: int = 19,
    crop_size: int = 512,
    pretrained: bool = False,
    weights: str | None = None,
    feature_indices: list[int] | tuple[int, ...] | None = None,
    backbone_kwargs: dict | None = None,
    head_channels: int = 256,
    token_length: int = 100,
    rank: int = 16,
    query_dim: int = 256,
    scale_init: float = 1e-3,
) -> Segmentor:
    """Compose a segmentor. Nothing is downloaded: with ``pretrained`` the backbone weights come from
    ``weights`` (a safetensors file) or the local Hugging Face cache, else it is randomly initialised.

    ``method``: "rein" (frozen backbone + Rein, queries from the Rein tokens), "frozen" (no Rein, learned
    queries) or "full" (no Rein, every backbone weight trained). ``head``: "mask2former" (the paper's)
    or "fpn" (a light per-pixel head).
    """
    if method not in METHODS:
        raise unknown_name("method", method, METHODS)
    if head not in HEADS:
        raise unknown_name("head", head, HEADS)
    spec = backbone_spec(backbone)
    stride = 32 if spec.family == "convnext" else PATCH_SIZE
    if crop_size % stride or crop_size < 2 * stride:
        raise ReinError(f"crop_size {crop_size} must be a multiple of {stride} and at least {2 * stride} for {backbone}")
    model = create_timm_model(backbone, crop_size, **(backbone_kwargs or {}))
    if pretrained:
        from rein_cli.models.weights import load_backbone_weights

        load_backbone_weights(model, weights or pretrained_weights_path(backbone, download=False), spec)
    rein_args = dict(token_length=token_length, query_dim=query_dim, scale_init=scale_init)

    def adapter(depth: int, dim: int) -> nn.Module:
        if method != "rein":
            return NoAdapter()
        reins = LoRAReins(depth, dim, PATCH_SIZE, rank=rank, **rein_args) if rank else Reins(depth, dim, PATCH_SIZE, **rein_args)
        if spec.family == "eva":  # the official EVA02 backbone re-initialises every Linear, Rein's included
            for m in reins.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        return reins

    trainable = method == "full"
    if spec.family == "convnext":
        stages = [(len(stage.blocks), stage.blocks[0].conv_dw.out_channels) for stage in model.stages]
        body = ReinConvNeXt(model, nn.ModuleList(adapter(d, c) for d, c in stages), crop_size, trainable=trainable)
    else:
        indices = tuple(feature_indices) if feature_indices is not None else spec.feature_indices
        body = FAMILIES[spec.family](model, adapter(len(model.blocks), model.embed_dim), indices, crop_size, trainable=trainable)
    if head == "mask2former":
        decode = Mask2FormerHead(body.out_channels, num_classes, num_queries=token_length, learned_queries=method != "rein")
    else:
        decode = FPNHead(body.out_channels, num_classes, channels=head_channels)
    return Segmentor(body, decode, num_classes=num_classes)


def segmentor_from_config(cfg: ModelConfig, *, download: bool = False) -> Segmentor:
    """Build the model a `ModelConfig` describes; pretrained weights may be downloaded when ``download``."""
    weights = cfg.weights or (pretrained_weights_path(cfg.backbone, download=download) if cfg.pretrained else None)
    return build_segmentor(
        cfg.backbone,
        method=cfg.method,
        head=cfg.head,
        num_classes=cfg.num_classes,
        crop_size=cfg.crop_size,
        pretrained=weights is not None,
        weights=weights,
        feature_indices=cfg.feature_indices,
        backbone_kwargs=cfg.backbone_kwargs,
        head_channels=cfg.head_channels,
        token_length=cfg.rein.token_length,
        rank=cfg.rein.rank,
        query_dim=cfg.rein.query_dim,
        scale_init=cfg.rein.scale_init,
    )


def pretrained_weights_path(backbone: str, *, download: bool) -> str:
    """The backbone's timm weights: from the local Hub cache, or downloaded when ``download`` is set."""
    from rein_cli.hub import WEIGHTS_FILE, cached_file, download_file

    repo = backbone_spec(backbone).hub_repo
    path = cached_file(repo)
    if path is None:
        if not download:
            raise ReinError(f"pretrained weights for {backbone} ({repo}) are not on disk; download them with "
                            f"`hf download {repo} {WEIGHTS_FILE}` or train with --set model.pretrained=false")  # fmt: skip
        path = download_file(repo)
    return str(path)


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
