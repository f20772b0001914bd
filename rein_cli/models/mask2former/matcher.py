"""Hungarian matching of queries to ground-truth masks on shared random points (Mask2Former's assigner)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def point_sample(inputs: Tensor, points: Tensor) -> Tensor:
    """Bilinear values of (N, C, H, W) maps at (N, P, 2) points (x, y) in [0, 1] -> (N, C, P)."""
    return F.grid_sample(inputs, 2 * points.unsqueeze(2) - 1, align_corners=False).squeeze(3)


def match_cost(
    cls_logits: Tensor,
    mask_points: Tensor,
    gt_labels: Tensor,
    gt_points: Tensor,
    *,
    w_class: float = 2.0,
    w_mask: float = 5.0,
    w_dice: float = 5.0,
) -> Tensor:
    """(Q, G) cost: -w_class x p(gt class) + w_mask x mean point BCE + w_dice x (1 - dice with +1 smoothing).

    cls_logits (Q, K+1); mask_points (Q, P) logits; gt_labels (G,); gt_points (G, P) in {0, 1}.
    """
    cost_class = -cls_logits.softmax(-1)[:, gt_labels]
    gt = gt_points.float()
    P = mask_points.shape[1]
    pos = F.binary_cross_entropy_with_logits(mask_points, torch.ones_like(mask_points), reduction="none")
    neg = F.binary_cross_entropy_with_logits(mask_points, torch.zeros_like(mask_points), reduction="none")
    cost_mask = (pos @ gt.T + neg @ (1 - gt).T) / P
    prob = mask_points.sigmoid()
    cost_dice = 1 - (2 * prob @ gt.T + 1) / (prob.sum(-1)[:, None] + gt.sum(-1)[None, :] + 1)
    return w_class * cost_class + w_mask * cost_mask + w_dice * cost_dice


@torch.no_grad()
def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """(query indices, gt indices) of the minimum-cost one-to-one assignment of a (Q, G) cost matrix."""
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    device = cost.device
    return torch.as_tensor(rows, dtype=torch.long, device=device), torch.as_tensor(
        cols, dtype=torch.long, device=device
    )
