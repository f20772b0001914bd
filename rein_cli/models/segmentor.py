"""The segmentor: backbone (frozen ViT + Rein) and a swappable head, and `build_segmentor` that composes them."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.config import (
    AdaptFormerConfig,
    Head,
    LoRAConfig,
    Method,
    ModelConfig,
    ReinConfig,
    VPTConfig,
    check_choice,
    check_section,
)
from rein_cli.errors import ReinError
from rein_cli.hub import revision_of
from rein_cli.labels import default_classes, default_palette
from rein_cli.models.backbone import (
    FAMILIES,
    PATCH_SIZE,
    FrozenBackbone,
    ReinConvNeXt,
    backbone_spec,
    create_timm_model,
)
from rein_cli.models.fpn_head import FPNHead
from rein_cli.models.mask2former import Mask2FormerHead
from rein_cli.models.peft import PEFT_METHODS, attach_method, check_supported, method_adapter
from rein_cli.models.rein import LoRAReins, Reins
from rein_cli.models.semfpn_head import SemanticFPNHead


class Segmentor(nn.Module):
    """``backbone(images) -> (pyramid, queries)``, then ``head(pyramid, queries)``.

    Inputs are normalised (B, 3, H, W) images. ``semantic_scores`` pads them to a multiple of the
    patch size and returns (B, K, H, W) per-class scores; ``training_loss`` returns named loss terms.

    Declared metadata: ``classes`` and ``palette`` (what the K outputs mean and how to draw them),
    ``mean`` and ``std`` (the input normalisation, 0..1 units), ``crop_size`` (training crop and slide
    window), ``config`` (the `ModelConfig` the model was built from) and ``provenance`` (where its weights
    came from: the checkpoint, and for a released adapter its source URL and SHA-256).
    """

    def __init__(
        self,
        backbone: FrozenBackbone,
        head: nn.Module,
        *,
        num_classes: int,
        config: ModelConfig,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.config = config
        self.classes = tuple(classes) if classes is not None else default_classes(num_classes)
        palette = palette if palette is not None else default_palette(num_classes)
        self.palette = tuple(tuple(int(v) for v in color) for color in palette)
        if len(self.classes) != num_classes or len(self.palette) < num_classes:
            raise ReinError(
                f"{num_classes} outputs need {num_classes} class names and colours, got "
                f"{len(self.classes)} and {len(self.palette)}"
            )
        self.mean = tuple(mean) if mean is not None else backbone.mean  # the backbone's own unless told otherwise
        self.std = tuple(std) if std is not None else backbone.std
        self.crop_size = backbone.crop_size
        self.provenance = dict(provenance or {})  # where the weights came from (checkpoint, release, Hub revision)

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
    """The parameters that training changes (the method's, e.g. Rein's, and the head's), by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def build_segmentor(
    backbone: str = "dinov2-l",
    *,
    method: Method = "rein",
    head: Head = "mask2former",
    num_classes: int = 19,
    crop_size: int = 512,
    pretrained: bool = False,
    weights: str | None = None,
    feature_indices: Sequence[int] | None = None,
    backbone_kwargs: Mapping | None = None,
    head_channels: int = 256,
    token_length: int = 100,
    rank: int = 16,
    query_dim: int = 256,
    scale_init: float = 1e-3,
    link: bool = True,
    shared_mlp: bool = True,
    lora_rank: int = 8,
    lora_alpha: int = 8,
    lora_dropout: float = 0.0,
    adaptformer_bottleneck: int = 64,
    adaptformer_scale: float = 0.1,
    vpt_length: int = 150,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> Segmentor:
    """Compose a segmentor. Nothing is downloaded: with ``pretrained`` the backbone weights come from
    ``weights`` (a safetensors file) or the local Hugging Face cache, else it is randomly initialised.

    ``method``: "rein" (frozen backbone + Rein, queries from the Rein tokens), "frozen" (no Rein, learned
    queries), "full" (no Rein, every backbone weight trained), or a PEFT baseline on the frozen backbone with
    learned queries: "lora" (``lora_rank``, ``lora_alpha``, ``lora_dropout``; needs the peft library),
    "adaptformer" (``adaptformer_bottleneck``, ``adaptformer_scale``) or "vpt" (``vpt_length`` prompts per block);
    see `rein_cli.models.peft`. ``token_length``, ``rank``, ``query_dim`` and ``scale_init`` are Rein's (the
    token length is also the number of learned queries), with the ablation switches ``link`` (queries from the
    tokens) and ``shared_mlp`` (one MLP set for all layers). ``head``: "mask2former" (the paper's), "fpn" (a light
    per-pixel head) or "semfpn" (mmseg's Semantic FPN). ``classes`` and ``palette`` default to the Cityscapes ones
    for 19 classes.
    """
    config = ModelConfig(
        backbone=backbone,
        pretrained=pretrained,
        weights=weights,
        method=method,
        head=head,
        head_channels=head_channels,
        num_classes=num_classes,
        crop_size=crop_size,
        feature_indices=tuple(feature_indices) if feature_indices is not None else None,
        backbone_kwargs=types.MappingProxyType(dict(backbone_kwargs or {})),
        rein=ReinConfig(
            token_length=token_length,
            rank=rank,
            query_dim=query_dim,
            scale_init=scale_init,
            link=link,
            shared_mlp=shared_mlp,
        ),
        lora=LoRAConfig(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout),
        adaptformer=AdaptFormerConfig(bottleneck=adaptformer_bottleneck, scale=adaptformer_scale),
        vpt=VPTConfig(length=vpt_length),
    )
    return segmentor_from_config(config, classes=classes, palette=palette)


def segmentor_from_config(
    cfg: ModelConfig,
    *,
    download: bool = False,
    load_backbone: bool = True,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Segmentor:
    """Build the model a `ModelConfig` describes. Pretrained backbone weights come from ``cfg.weights`` or the
    Hub cache (downloaded when ``download``); ``load_backbone=False`` leaves the backbone randomly initialised
    for weights that come from elsewhere (a checkpoint, an official file)."""
    if cfg.num_classes is None:  # the classes given, else the Cityscapes label space
        cfg = dataclasses.replace(cfg, num_classes=len(classes) if classes is not None else len(default_classes(19)))
    check_choice("method", cfg.method, Method)
    check_choice("head", cfg.head, Head)
    spec = backbone_spec(cfg.backbone)
    check_supported(cfg.method, cfg.backbone)
    if cfg.method in PEFT_METHODS:  # its settings, checked as the config's keys are (a built model may skip that)
        check_section(getattr(cfg, cfg.method), f"model.{cfg.method}.")
    stride = 32 if spec.family == "convnext" else PATCH_SIZE
    if cfg.crop_size % stride or cfg.crop_size < 2 * stride:
        raise ReinError(
            f"crop_size {cfg.crop_size} must be a multiple of {stride} and at least {2 * stride} for {cfg.backbone}"
        )
    weights = None
    if load_backbone and cfg.weights:
        if not Path(cfg.weights).is_file():
            raise ReinError(
                f"model.weights {cfg.weights} does not exist; give the safetensors file of backbone weights (e.g. "
                "written by `rein convert`), or leave model.weights unset to use the Hub's"
            )
        weights = cfg.weights
    elif load_backbone and cfg.pretrained:  # found (or downloaded) before anything is built; its commit recorded
        weights = pretrained_weights_path(cfg.backbone, download=download, revision=cfg.backbone_revision)
        cfg = dataclasses.replace(cfg, backbone_revision=revision_of(Path(weights)) or cfg.backbone_revision)
    model = create_timm_model(cfg.backbone, cfg.crop_size, **cfg.backbone_kwargs)
    if weights is not None:
        from rein_cli.models.weights import converted_path, load_backbone_weights

        load_backbone_weights(model, weights, spec, cache=converted_path(cfg.backbone, weights, cfg.crop_size))
    rein = cfg.rein
    rein_args = dict(
        token_length=rein.token_length,
        query_dim=rein.query_dim,
        scale_init=rein.scale_init,
        link=rein.link,
        shared_mlp=rein.shared_mlp,
    )

    def adapter(depth: int, dim: int) -> nn.Module:
        if cfg.method != "rein":
            return method_adapter(cfg, depth, dim)
        if rein.rank:
            reins = LoRAReins(depth, dim, PATCH_SIZE, rank=rein.rank, **rein_args)
        else:
            reins = Reins(depth, dim, PATCH_SIZE, **rein_args)
        if spec.family == "eva":  # the official EVA02 backbone re-initialises every Linear, Rein's included
            for m in reins.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        return reins

    trainable = cfg.method == "full"
    if spec.family == "convnext":
        stages = [(len(stage.blocks), stage.blocks[0].conv_dw.out_channels) for stage in model.stages]
        reins = nn.ModuleList(adapter(d, c) for d, c in stages)
        body = ReinConvNeXt(model, reins, cfg.crop_size, trainable=trainable)
    else:
        indices = cfg.feature_indices if cfg.feature_indices is not None else spec.feature_indices
        reins = adapter(len(model.blocks), model.embed_dim)
        body = FAMILIES[spec.family](model, reins, indices, cfg.crop_size, trainable=trainable)
        if cfg.method in PEFT_METHODS:
            attach_method(body, cfg, spec.family)
    if cfg.head == "mask2former":
        learned_queries = cfg.method != "rein" or not rein.link
        decode = Mask2FormerHead(
            body.out_channels, cfg.num_classes, num_queries=rein.token_length, learned_queries=learned_queries
        )
    elif cfg.head == "semfpn":
        decode = SemanticFPNHead(body.out_channels, cfg.num_classes)
    else:
        decode = FPNHead(body.out_channels, cfg.num_classes, channels=cfg.head_channels)
    return Segmentor(
        body,
        decode,
        num_classes=cfg.num_classes,
        config=cfg,
        classes=classes,
        palette=palette,
        mean=mean,
        std=std,
        provenance=provenance,
    )


def pretrained_weights_path(backbone: str, *, download: bool, revision: str | None = None) -> str:
    """The backbone's timm weights (at a Hub ``revision``, default the latest): from the local Hub cache, or
    downloaded when ``download`` is set."""
    from rein_cli.hub import WEIGHTS_FILE, cached_file, download_file

    repo = backbone_spec(backbone).hub_repo
    path = cached_file(repo, revision=revision)
    if path is None:
        if not download:
            at = f" --revision {revision}" if revision else ""
            raise ReinError(
                f"pretrained weights for {backbone} ({repo}) are not on disk; download them with "
                f"`rein pull {backbone}` (or `hf download {repo} {WEIGHTS_FILE}{at}`) or train with "
                "--set model.pretrained=false"
            )
        path = download_file(repo, revision=revision)
    return str(path)


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
