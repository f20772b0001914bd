"""The optimizer: AdamW over the trainable parameters in official groups, and the poly learning-rate schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rein_cli.config import NO_DECAY_KEYS

BACKBONE_PREFIX = "backbone.vit."  # the pretrained model: trained only with method "full", at lr x backbone_lr_mult
ADDED_KEYS = (".lora_",)  # parameters a method adds inside the pretrained model (LoRA's A and B): trained at lr x 1


def param_groups(
    model: nn.Module, weight_decay: float, backbone_lr_mult: float = 0.1, no_decay_keys: Sequence[str] = NO_DECAY_KEYS
) -> list[dict]:
    """Trainable parameters in groups by (learning-rate multiplier, weight decay): no decay for norm layers and
    for names containing one of ``no_decay_keys`` (by default Rein tokens and scale, level and query embeddings);
    the pretrained backbone, when trained, at ``backbone_lr_mult`` (not what a method adds inside it, `ADDED_KEYS`).
    Frozen parameters are left out."""
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if id(p) in norm_params or any(key in name for key in no_decay_keys) else weight_decay
        pretrained = name.startswith(BACKBONE_PREFIX) and not any(key in name for key in ADDED_KEYS)
        mult = backbone_lr_mult if pretrained else 1.0
        groups.setdefault((mult, decay), []).append(p)
    return [
        {"params": ps, "lr_mult": mult, "weight_decay": decay}
        for (mult, decay), ps in sorted(groups.items(), reverse=True)
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    backbone_lr_mult: float = 0.1,
    no_decay_keys: Sequence[str] = NO_DECAY_KEYS,
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; set each group's lr to ``lr_at(step) * group["lr_mult"]``."""
    groups = param_groups(model, weight_decay, backbone_lr_mult, no_decay_keys)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def lr_at(
    step: int, *, base_lr: float, max_iters: int, power: float = 0.9, warmup_iters: int = 0, min_lr: float = 0.0
) -> float:
    """Learning rate at ``step``: linear warmup from 1e-6 x ``base_lr`` over ``warmup_iters``, then poly decay
    to ``min_lr`` over the remaining iterations (mmengine's LinearLR followed by PolyLR)."""
    if step < warmup_iters:
        return base_lr * (1e-6 + (1 - 1e-6) * step / warmup_iters)
    progress = (min(step, max_iters) - warmup_iters) / max(max_iters - warmup_iters, 1)
    return (base_lr - min_lr) * (1 - progress) ** power + min_lr
