"""The segmentor: backbone (frozen ViT + the method's adapter) and a swappable head, and `build_segmentor`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.config import Head, Method, ModelConfig, Neck, check_choice, check_section, merge_keys
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
    input_normalization,
)
from rein_cli.models.fpn_head import FPNHead
from rein_cli.models.mask2former import Mask2FormerHead
from rein_cli.models.methods import METHODS, check_supported, uses_rein_queries
from rein_cli.models.neck import MultiLevelNeck
from rein_cli.models.semfpn_head import SemanticFPNHead


class Segmentor(nn.Module):
    """``backbone(images) -> (pyramid, queries)``, then ``head(pyramid, queries)``; with a ``neck`` (mmseg's
    `MultiLevelNeck`) the backbone's four stride-16 maps go through it to make the pyramid.

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
        neck: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if neck is not None:  # state-dict keys neck.*, as the official model's
            self.neck = neck
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
        if "neck" in self._modules:
            features = self._modules["neck"](features)
        return self.head(features, queries)

    def semantic_scores(self, images: Tensor) -> Tensor:
        H, W = images.shape[-2:]
        p = self.backbone.patch_size
        pad_h, pad_w = -H % p, -W % p
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))  # zeros = the mean colour after normalisation
        outputs = self(images)
        with torch.autocast(images.device.type, enabled=False):  # under bf16 autocast too, the scores in float32
            scores = self.head.semantic_scores(as_float(outputs), images.shape[-2:])
        return scores[..., :H, :W]

    def training_loss(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return self.head.loss(self(images), labels)


def as_float(outputs: Any) -> Any:
    """A head's outputs with every floating tensor in float32 (tuples, named tuples and lists followed): the losses
    and the scores are computed in float32."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return type(outputs)(*(as_float(o) for o in outputs))
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float(o) for o in outputs)
    return outputs


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The parameters that training changes (the method's, e.g. Rein's, and the head's), by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def build_segmentor(
    config: ModelConfig | str = "dinov2-l",
    *,
    download: bool = False,
    load_backbone: bool = True,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    provenance: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Segmentor:
    """Build the model a `ModelConfig` describes, or a backbone name with ``settings``.

    ``config``: a `ModelConfig`, or a backbone name (``"dinov2-l"``), which builds the defaults with random
    backbone weights (``pretrained=False``) and 19 outputs unless ``classes`` are given. ``settings`` are
    `ModelConfig` keys, spelled and type-checked as the ``model.*`` configuration keys are, set on top of
    ``config``: ``method="lora"``, ``head="fpn"``, ``pretrained=True``, ``crop_size=512``, a section as a mapping of
    its keys or an instance, ``rein={"rank": 4}``, ``lora=LoRAConfig(rank=4)``; see `rein_cli.models.methods` for
    the methods and docs/model.md for the heads.

    Pretrained backbone weights come from ``weights`` (a safetensors file) or the Hub cache; nothing is downloaded
    unless ``download``. ``load_backbone=False`` leaves the backbone randomly initialised for weights that come
    from elsewhere (a checkpoint, an official file). ``classes``, ``palette``, ``mean``, ``std`` and ``provenance``
    are the model's declared metadata (`Segmentor`); classes and palette default to the Cityscapes ones.
    """
    cfg = model_config(config, settings)
    if cfg.num_classes is None:  # the classes given, else the Cityscapes label space
        cfg = dataclasses.replace(cfg, num_classes=len(classes) if classes is not None else len(default_classes(19)))
    check_choice("method", cfg.method, Method)
    check_choice("head", cfg.head, Head)
    check_choice("neck", cfg.neck, Neck)
    spec = backbone_spec(cfg.backbone)
    check_supported(cfg.method, cfg.backbone)
    check_official_options(cfg, spec.family)
    method = METHODS[cfg.method]
    if method.section:  # its settings, checked as the config's keys are (a built model may skip that)
        check_section(method.settings(cfg), f"model.{method.section}.")
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
    options = method.settings(cfg)
    common = dict(slot=method.slot, trainable=method.trains_backbone, normalization=input_normalization(cfg.backbone))
    if spec.family == "convnext":  # one adapter per stage
        stages = [(len(stage.blocks), stage.blocks[0].conv_dw.out_channels) for stage in model.stages]
        adapter = nn.ModuleList(method.adapter(options, spec.family, d, c) for d, c in stages)
        body = ReinConvNeXt(model, adapter, cfg.crop_size, **common)
    else:
        indices = cfg.feature_indices if cfg.feature_indices is not None else spec.feature_indices
        adapter = method.adapter(options, spec.family, len(model.blocks), model.embed_dim)
        body = FAMILIES[spec.family](
            model,
            adapter,
            indices,
            cfg.crop_size,
            pyramid=cfg.neck == "none",
            class_embedding_twice=cfg.class_embedding_twice,
            **common,
        )
    if method.attach is not None:
        method.attach(body, options, spec.family)
    neck, channels = None, body.out_channels
    if cfg.neck == "multilevel":  # as the official frozen CLIP-L config: out_channels = the backbone's width
        neck = MultiLevelNeck(body.out_channels, body.out_channels[-1])
        channels = [neck.out_channels] * len(neck.scales)
    if cfg.head == "mask2former":
        decode = Mask2FormerHead(
            channels,
            cfg.num_classes,
            num_queries=cfg.rein.token_length,
            learned_queries=not uses_rein_queries(cfg),
        )
    elif cfg.head == "semfpn":
        decode = SemanticFPNHead(channels, cfg.num_classes)
    else:
        decode = FPNHead(channels, cfg.num_classes, channels=cfg.head_channels)
    return Segmentor(
        body,
        decode,
        neck=neck,
        num_classes=cfg.num_classes,
        config=cfg,
        classes=classes,
        palette=palette,
        mean=mean,
        std=std,
        provenance=provenance,
    )


def check_official_options(cfg: ModelConfig, family: str) -> None:
    """``model.neck`` and ``model.class_embedding_twice`` where they apply: the neck reads a ViT's four stride-16
    maps (ConvNeXt's stages already are a pyramid); the class embedding quirk is the official CLIP backbone's."""
    if cfg.neck != "none" and family == "convnext":
        raise ReinError(
            f"model.neck = {cfg.neck} resizes a ViT's four stride-16 maps; {cfg.backbone}'s stages already are a "
            "pyramid: leave model.neck at none"
        )
    if cfg.class_embedding_twice and cfg.backbone != "clip-l":
        raise ReinError(
            "model.class_embedding_twice reproduces the official CLIP backbone (its class token gets the class "
            f"embedding twice); it applies to clip-l only, not {cfg.backbone}: leave it false"
        )


def model_config(config: ModelConfig | str, settings: Mapping[str, Any]) -> ModelConfig:
    """``config`` (a backbone name: the defaults without pretrained weights nor a fixed number of classes) with
    ``settings``, `ModelConfig` keys, set on top, each type-checked and named ``model.<key>`` in errors."""
    if isinstance(config, str):
        config = ModelConfig(backbone=config, pretrained=False)
    elif not isinstance(config, ModelConfig):
        raise ReinError(f"build_segmentor takes a ModelConfig or a backbone name, got {type(config).__name__}")
    keys = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    sections = {k: {f.name for f in dataclasses.fields(v)} for k, v in keys.items() if dataclasses.is_dataclass(v)}
    for key, value in settings.items():  # a section's key given alone (rank=4, lora_rank=4): name its spelling
        spellings = {
            f'{name}={{"{inner}": {value!r}}}': None
            for name, inner_keys in sections.items()
            for inner in (key, key.removeprefix(f"{name}_"))
            if key not in keys and inner in inner_keys
        }
        if spellings:
            raise ReinError(
                f"build_segmentor has no keyword {key}; its settings are spelled as the model.* configuration "
                f"keys: {' or '.join(spellings)}"
            )
    return merge_keys(config, settings, "model.")


def pull_command(backbone: str, revision: str | None = None) -> str:
    """The command that puts a backbone's weights (at ``revision``) into the local Hub cache, in backticks."""
    return f"`rein pull {backbone}" + (f" --revision {revision}`" if revision else "`")


def pretrained_weights_path(backbone: str, *, download: bool, revision: str | None = None) -> str:
    """The backbone's timm weights (at a Hub ``revision``, default the latest): from the local Hub cache, or
    downloaded when ``download`` is set and the Hub is online."""
    from rein_cli.hub import cached_weights, download_weights, offline

    repo = backbone_spec(backbone).hub_repo
    path = cached_weights(repo, revision=revision)
    if path is None:
        if offline() or not download:
            why = "the Hub is offline (HF_HUB_OFFLINE=1 or --offline)" if offline() else "this build may not download"
            at = f" at {revision}" if revision else ""
            raise ReinError(
                f"the pretrained weights of {backbone} ({repo}{at}) are not in the local Hugging Face cache and {why}; "
                f"run {pull_command(backbone, revision)} with a connection, then rerun"
            )
        path = download_weights(repo, revision, fetch=pull_command(backbone, revision))
    return str(path)


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
