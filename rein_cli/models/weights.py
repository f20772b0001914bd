"""Pretrained backbone weights as the official model sees them: patch 14 -> 16 and the position grid, bicubic.

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


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
    """(1, P + g*g, C) -> (1, P + H*W, C): the square grid resized bicubically, the P prefix positions kept."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ReinError(f"position embedding of {patches.shape[1]} patches is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    C = patches.shape[-1]
    patches = patches.reshape(1, side, side, C).permute(0, 3, 1, 2)  # (1, C, g, g)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False)
    return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(1, -1, C)], dim=1)  # (1, P + H*W, C)


def adapt_vit_state_dict(state: dict[str, Tensor], vit: nn.Module) -> dict[str, Tensor]:
    """A timm ViT state dict resized to ``vit``'s patch size and position grid; classifier keys dropped."""
    own = vit.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    if "patch_embed.proj.weight" in state:
        state["patch_embed.proj.weight"] = resize_patch_embed(
            state["patch_embed.proj.weight"], own["patch_embed.proj.weight"].shape[-1]
        )
    if "pos_embed" in state:
        grid = tuple(vit.patch_embed.grid_size)
        num_prefix = own["pos_embed"].shape[1] - grid[0] * grid[1]
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], grid, num_prefix)
    return state


def load_vit_weights(vit: nn.Module, path: Path) -> None:
    """Load a timm-format safetensors file into ``vit`` with the official resizing; every weight must be filled."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ReinError(f"cannot read backbone weights {path}: {err}; delete the file and download it again") from err
    state = adapt_vit_state_dict(state, vit)
    missing = sorted(set(vit.state_dict()) - set(state))
    if missing:
        raise ReinError(f"backbone weights {path} lack {len(missing)} tensors (e.g. {', '.join(missing[:3])}); "
                        "is it the right backbone?")  # fmt: skip
    try:
        vit.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ReinError(f"backbone weights {path} do not fit: {err}") from err
