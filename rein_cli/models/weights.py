"""Pretrained backbone weights as the official model sees them: patch 14 -> 16 and the position grid resized.

The official conversion resizes the 14x14 patch kernel to 16x16 and the 37x37 position grid to the
crop's grid (32x32 for 512 crops) with plain bicubic interpolation, ``align_corners=False``, no
antialiasing and no rescaling of magnitudes. timm's own load-time resampling differs (pseudo-inverse
kernel resize, antialiased grid), so weights are loaded through these functions instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.errors import ReinError


def resize_patch_embed(weight: Tensor, patch_size: int) -> Tensor:
    """(C, 3, p, p) kernel -> (C, 3, patch_size, patch_size), bicubic, no rescale."""
    if weight.shape[-1] == patch_size and weight.shape[-2] == patch_size:
        return weight
    return F.interpolate(weight.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False)


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int, mode: str = "bicubic") -> Tensor:
    """(1, P + g*g, C) -> (1, P + H*W, C): the square grid resized (``align_corners=False``), P prefixes kept."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ReinError(f"position embedding of {patches.shape[1]} patches is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    C = patches.shape[-1]
    patches = patches.reshape(1, side, side, C).permute(0, 3, 1, 2)  # (1, C, g, g)
    patches = F.interpolate(patches.float(), size=grid, mode=mode, align_corners=False)
    return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(1, -1, C)], dim=1)  # (1, P + H*W, C)


def resize_rel_pos(rel_pos: Tensor, length: int) -> Tensor:
    """SAM's relative position table (L, C) -> (length, C), linearly, as SAM itself does at run time."""
    if rel_pos.shape[0] == length:
        return rel_pos
    return F.interpolate(rel_pos.T[None].float(), size=length, mode="linear")[0].T


def adapt_state_dict(state: dict[str, Tensor], model: nn.Module, pos_mode: str = "bicubic") -> dict[str, Tensor]:
    """A timm state dict resized to ``model``'s patch size, position grid (and SAM's relative position
    tables); keys the model lacks (classifier heads) dropped."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    if "patch_embed.proj.weight" in state:
        state["patch_embed.proj.weight"] = resize_patch_embed(
            state["patch_embed.proj.weight"], own["patch_embed.proj.weight"].shape[-1]
        )
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        pos, target = state["pos_embed"], own["pos_embed"]
        if pos.dim() == 4:  # SAM: (1, H, W, C)
            grid = F.interpolate(
                pos.permute(0, 3, 1, 2).float(), size=target.shape[1:3], mode=pos_mode, align_corners=False
            )
            state["pos_embed"] = grid.permute(0, 2, 3, 1)
        else:
            grid = tuple(model.patch_embed.grid_size)
            state["pos_embed"] = resize_pos_embed(pos, grid, target.shape[1] - grid[0] * grid[1], pos_mode)
    for key in [k for k in state if k.endswith(("rel_pos_h", "rel_pos_w"))]:
        state[key] = resize_rel_pos(state[key], own[key].shape[0])
    return state


def load_backbone_weights(model: nn.Module, path: Path | str, spec=None) -> None:
    """Load a timm-format safetensors file into ``model`` with the official resizing; every weight must be filled."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ReinError(f"cannot read backbone weights {path}: {err}; delete the file and download it again") from err
    state = adapt_state_dict(state, model, spec.pos_mode if spec is not None else "bicubic")
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ReinError(
            f"backbone weights {path} lack {len(missing)} tensors (e.g. {', '.join(missing[:3])}); "
            "is it the right backbone?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ReinError(f"backbone weights {path} do not fit: {err}") from err
