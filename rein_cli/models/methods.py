"""The training methods as data: what each trains, which queries the head reads, where it runs, how it is built."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from rein_cli.config import AdaptFormerConfig, LoRAConfig, ModelConfig, ReinConfig, VPTConfig
from rein_cli.errors import ReinError
from rein_cli.models.backbone import BACKBONES, PATCH_SIZE, FrozenBackbone, NoAdapter
from rein_cli.models.peft import LORA_TARGETS, AdaptFormer, VisualPrompts, inject_lora
from rein_cli.models.rein import LoRAReins, Reins

# (settings, backbone family, depth, width) -> the block-loop adapter of one backbone (of one ConvNeXt stage);
# settings is the method's config section (`MethodSpec.section`), None for a method without one.
Adapter = Callable[[Any, str, int, int], nn.Module]
# (backbone, settings, backbone family) -> None: what a method adds inside the timm model, its weights loaded.
Attach = Callable[[FrozenBackbone, Any, str], None]

NOT_A_VIT = "it is not a ViT"
NO_PREFIX_TOKENS = "its windowed blocks work on a 2-D map without prefix tokens"


@dataclass(frozen=True)
class MethodSpec:
    """One value of ``model.method``: what it trains, which queries the Mask2Former head reads, the backbone
    families it runs on, and how its adapter is built and attached to the backbone."""

    trains: str  # what training changes besides the whole head, in words
    adapter: Adapter  # its block-loop adapter (`NoAdapter` for a method without one)
    slot: str  # the backbone's attribute holding the adapter: state-dict keys ``backbone.<slot>.*``
    section: str | None = None  # the `ModelConfig` section of its settings (``model.<section>.*``)
    attach: Attach | None = None  # run once the pretrained weights are loaded (LoRA's layers, AdaptFormer's hooks)
    trains_backbone: bool = False  # every pretrained weight trains, so checkpoints store the backbone
    rein_queries: bool = False  # the Mask2Former head reads Rein's queries (with ``model.rein.link`` on)
    converts_official: bool = False  # the official Rein checkpoints convert to it (`rein convert`)
    # backbone family -> why the method does not run there; it runs on every other family
    refused: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def families(self) -> tuple[str, ...]:
        """The backbone families it runs on."""
        return tuple(f for f in dict.fromkeys(spec.family for spec in BACKBONES.values()) if f not in self.refused)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused", types.MappingProxyType(dict(self.refused)))  # read-only, as the table

    def settings(self, cfg: ModelConfig) -> Any:
        """Its section of ``cfg`` (e.g. ``cfg.lora``), None for a method without one."""
        return getattr(cfg, self.section) if self.section else None


def rein_adapter(rein: ReinConfig, family: str, depth: int, dim: int) -> nn.Module:
    """Rein of a ``depth``-block, ``dim``-wide backbone: low-rank tokens (`LoRAReins`), or full rank with rank 0."""
    args = dict(
        token_length=rein.token_length,
        query_dim=rein.query_dim,
        scale_init=rein.scale_init,
        link=rein.link,
        shared_mlp=rein.shared_mlp,
    )
    if rein.rank:
        reins = LoRAReins(depth, dim, PATCH_SIZE, rank=rein.rank, **args)
    else:
        reins = Reins(depth, dim, PATCH_SIZE, **args)
    if family == "eva":  # the official EVA02 backbone re-initialises every Linear, Rein's included
        for m in reins.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
    return reins


def no_adapter(settings: Any, family: str, depth: int, dim: int) -> nn.Module:
    """The adapter of a method that adds nothing to the block loop (frozen, full, lora)."""
    return NoAdapter()


def adaptformer_adapter(settings: AdaptFormerConfig, family: str, depth: int, dim: int) -> nn.Module:
    return AdaptFormer(depth, dim, bottleneck=settings.bottleneck, scale=settings.scale)


def vpt_adapter(settings: VPTConfig, family: str, depth: int, dim: int) -> nn.Module:
    return VisualPrompts(depth, dim, length=settings.length)


def attach_lora(body: FrozenBackbone, settings: LoRAConfig, family: str) -> None:
    """LoRA's layers inside the timm model (their names get ``base_layer`` and ``lora_A``/``lora_B`` parts)."""
    inject_lora(body.vit, LORA_TARGETS[family], rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout)


def attach_adaptformer(body: FrozenBackbone, settings: AdaptFormerConfig, family: str) -> None:
    """AdaptFormer's hooks on every block's ``norm2`` (no names change)."""
    body.adapter.attach(body.vit.blocks)


METHODS: dict[str, MethodSpec] = {
    "rein": MethodSpec(
        "Rein (tokens, MLPs, scale)",
        rein_adapter,
        slot="reins",  # the official implementation's name: its checkpoints' backbone.reins.* keys
        section="rein",
        rein_queries=True,
        converts_official=True,
    ),
    "frozen": MethodSpec("nothing in the backbone", no_adapter, slot="identity"),
    "full": MethodSpec("every backbone weight", no_adapter, slot="identity", trains_backbone=True),
    "lora": MethodSpec(
        "LoRA's A and B of the attention projections",
        no_adapter,  # LoRA lives inside the timm model
        slot="identity",
        section="lora",
        attach=attach_lora,
        refused={"convnext": NOT_A_VIT},
    ),
    "adaptformer": MethodSpec(
        "the bottleneck adapters beside every MLP branch",
        adaptformer_adapter,
        slot="adaptformer",
        section="adaptformer",
        attach=attach_adaptformer,
        refused={"convnext": NOT_A_VIT},
    ),
    "vpt": MethodSpec(
        "the prompts of every block",
        vpt_adapter,
        slot="prompts",
        section="vpt",
        # VPT needs prefix tokens in a token sequence
        refused={"sam": NO_PREFIX_TOKENS, "convnext": NOT_A_VIT},
    ),
}


def uses_rein_queries(cfg: ModelConfig) -> bool:
    """Whether the Mask2Former head reads Rein's queries (else it learns its own: ``query_embed``, ``query_feat``)."""
    return METHODS[cfg.method].rein_queries and cfg.rein.link


def supported_backbones(method: str) -> tuple[str, ...]:
    """The backbones ``method`` runs on."""
    families = METHODS[method].families
    return tuple(name for name, spec in BACKBONES.items() if spec.family in families)


def check_supported(method: str, backbone: str) -> None:
    """A `ReinError` naming the method, the backbone and what is supported when the pair cannot be built."""
    if method not in METHODS or backbone not in BACKBONES:
        return
    why = METHODS[method].refused.get(BACKBONES[backbone].family)
    if why:
        raise ReinError(
            f"method {method} does not run on backbone {backbone} ({why}); {method} runs on "
            f"{', '.join(supported_backbones(method))}"
        )
