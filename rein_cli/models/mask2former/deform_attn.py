"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch with ``grid_sample``: CPU and GPU alike."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """Sample each level's values at the given locations and sum them with the attention weights.

    value (B, N, heads, d) holds the levels' flattened maps back to back (level l is (H_l, W_l));
    locations (B, Q, heads, levels, points, 2) are (x, y) in [0, 1]; weights (B, Q, heads, levels, points).
    Returns (B, Q, heads * d). Bilinear sampling with zero padding, ``align_corners=False``.

    Without gradients (inference) it is one weighted sum of the four corners of every sample (`_weighted_corners`),
    in float32, about twice as fast on a CPU as sampling each level with ``grid_sample`` and weighting the samples
    (its backward is slower, so training samples with ``grid_sample``).
    """
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (value, locations, weights))):
        return _weighted_corners(value, shapes, locations, weights)
    B, _, heads, d = value.shape
    Q = locations.shape[1]
    grids = 2 * locations - 1  # grid_sample's [-1, 1] coordinates
    weights = weights.transpose(1, 2).flatten(0, 1)[:, None]  # (B*heads, 1, Q, levels, points)
    out = value.new_zeros(B * heads, d, Q)
    for level, (values_l, (H, W)) in enumerate(
        zip(value.split([h * w for h, w in shapes], dim=1), shapes, strict=True)
    ):
        values_l = values_l.flatten(2).transpose(1, 2).reshape(B * heads, d, H, W)  # (B*heads, d, H, W)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*heads, Q, points, 2)
        sampled = F.grid_sample(values_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        out += (sampled * weights[..., level, :]).sum(-1)  # (B*heads, d, Q, points) -> (B*heads, d, Q)
    return out.view(B, heads * d, Q).transpose(1, 2)


def _weighted_corners(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """`ms_deform_attn` as one ``embedding_bag``: for each query and head, the sum over levels, points and the four
    bilinear corners of (attention weight x corner weight) x the corner's value vector; a corner outside its map
    has weight 0. Computed in float32 (the values and weights of bf16 autocast are converted)."""
    B, N, heads, d = value.shape
    Q, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    device = value.device
    sizes = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32, device=device)  # (levels, 2): W, H
    starts = torch.tensor([0, *(h * w for h, w in shapes[:-1])], device=device).cumsum(0)  # first row of each level
    pixels = locations.float() * sizes[:, None] - 0.5  # (B, Q, heads, levels, points, 2), pixel centres at integers
    corner0 = pixels.floor()
    frac = pixels - corner0
    W, H = sizes[:, None, 0], sizes[:, None, 1]  # (levels, 1): broadcast over points
    weights = weights.float()
    # the table's row of (image b, head h, pixel n) is (b * heads + h) * N + n
    base = (torch.arange(B, device=device)[:, None] * heads + torch.arange(heads, device=device)) * N  # (B, heads)
    base = base[:, None, :, None, None] + starts[:, None]  # (B, 1, heads, levels, 1)
    rows, coefficients = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            x, y = corner0[..., 0] + dx, corner0[..., 1] + dy
            inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            rows.append(torch.where(inside, base + (y * W + x).long(), 0))
            coefficients.append(weights * wx * wy * inside)
    rows = torch.stack(rows, -1).view(B * Q * heads, levels * points * 4)  # rows of (b, q, h)
    coefficients = torch.stack(coefficients, -1).view(B * Q * heads, levels * points * 4)
    table = value.float().transpose(1, 2).reshape(B * heads * N, d)
    out = F.embedding_bag(rows, table, per_sample_weights=coefficients, mode="sum")  # (B * Q * heads, d)
    return out.view(B, Q, heads * d)


class MSDeformAttn(nn.Module):
    """Deformable attention over ``levels`` feature maps, ``points`` samples per head and level.

    ``forward(query, value, query_pos, reference_points, shapes)`` returns ``query + attention``: the
    position is added to the query only; the values are the projected input without position.
    Parameter names and initialisation follow mmcv's ``MultiScaleDeformableAttention``.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4) -> None:
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)  # point k at (k+1) steps
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, query: Tensor, value: Tensor, query_pos: Tensor, reference_points: Tensor, shapes: list[tuple[int, int]]
    ) -> Tensor:
        """query (B, Q, C), value (B, N, C), reference_points (B, Q, levels, 2) as (x, y) in [0, 1]."""
        B, Q, C = query.shape
        q = query + query_pos
        v = self.value_proj(value).view(B, value.shape[1], self.num_heads, C // self.num_heads)
        offsets = self.sampling_offsets(q).view(B, Q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(q).view(B, Q, self.num_heads, self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(B, Q, self.num_heads, self.num_levels, self.num_points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)  # (levels, 2)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return query + self.output_proj(ms_deform_attn(v, shapes, locations, weights))
