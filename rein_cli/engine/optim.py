"""The optimizer: AdamW over the trainable parameters in official groups, and the poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

NO_DECAY_KEYS = ("learnable_tokens", "reins.scale", "level_embed", "norm")  # substrings, rein-facts §5.2


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: without weight decay (Rein tokens and scale, norm layers,
    level embeddings) and with it (everything else). Frozen parameters are left out."""
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.InstanceNorm2d)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = id(p) in norm_params or any(key in name for key in NO_DECAY_KEYS)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: list[float], eps: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def lr_at(step: int, *, base_lr: float, max_iters: int, power: float = 0.9, warmup_iters: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warmup from 1e-6 x ``base_lr`` over ``warmup_iters``, then poly decay
    to ``min_lr`` over the remaining iterations (mmengine's LinearLR followed by PolyLR)."""
    if step < warmup_iters:
        return base_lr * (1e-6 + (1 - 1e-6) * step / warmup_iters)
    progress = (min(step, max_iters) - warmup_iters) / max(max_iters - warmup_iters, 1)
    return (base_lr - min_lr) * (1 - progress) ** power + min_lr
