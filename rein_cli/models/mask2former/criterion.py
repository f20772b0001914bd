"""The Mask2Former training losses, as in mmdet: matching, then class CE, point-sampled mask BCE and dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rein_cli.models.mask2former.matcher import hungarian_match, match_cost, point_sample

EPS = torch.finfo(torch.float32).eps  # mmdet adds it to every avg_factor


def semantic_targets(label: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """One binary mask per class present in an (H, W) label map, ``ignore_index`` excluded: (G,), (G, H, W)."""
    classes = torch.unique(label)
    classes = classes[classes != ignore_index]
    return classes.long(), label[None] == classes[:, None, None]


def _float_targets(targets: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[int]]:
    """Every image's masks as one (G_total, 1, H, W) float tensor, converted once for all predictions, and the
    index of each image's first mask in it."""
    masks = [gt_masks for _, gt_masks in targets]
    starts = [0]
    for m in masks[:-1]:
        starts.append(starts[-1] + len(m))
    return torch.cat(masks)[:, None].float(), starts


def uncertain_points(mask_logits: Tensor, num_points: int, oversample: float = 3.0, importance: float = 0.75) -> Tensor:
    """PointRend's training points for (N, 1, h, w) logits: of ``oversample`` x ``num_points`` random
    candidates keep the ``importance`` share closest to the decision boundary, fill up with uniform ones."""
    N = mask_logits.shape[0]
    candidates = torch.rand(N, int(num_points * oversample), 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates)[:, 0].abs()  # (N, candidates)
    k = int(importance * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    chosen = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(N, num_points - k, 2, device=mask_logits.device)], dim=1)


def matched_logits(mask_embeds: Tensor, mask_features: Tensor, images: list[int], queries: list[Tensor]) -> Tensor:
    """The mask logits (M, h, w) of the matched queries alone, ``queries[i]`` of image ``images[i]``, in that order:
    what ``einsum("bqc,bchw->bqhw", mask_embeds, mask_features)[images, queries]`` holds, without computing (and
    back-propagating through) the other queries' masks. One batched product: each image's matched embeddings, padded
    with zeros to the most matches of an image."""
    most = max(len(rows) for rows in queries)
    picked = mask_embeds.new_zeros(mask_features.shape[0], most, mask_embeds.shape[-1])
    for image, rows in zip(images, queries, strict=True):
        picked[image, : len(rows)] = mask_embeds[image, rows]
    logits = torch.einsum("bmc,bchw->bmhw", picked, mask_features)
    device = logits.device
    slots = torch.cat([torch.arange(len(rows), device=device) for rows in queries])
    owners = torch.cat(
        [torch.full((len(rows),), image, device=device) for image, rows in zip(images, queries, strict=True)]
    )
    return logits[owners, slots]


def dice_loss(logits: Tensor, targets: Tensor, avg_factor: float) -> Tensor:
    """Sum over masks of 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid; divided by ``avg_factor``."""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).float()
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / (avg_factor + EPS)


def mean_across_processes(value: Tensor) -> Tensor:
    """The average over distributed processes (the value itself when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value.div_(dist.get_world_size()))
    return value


def _single_prediction_losses(
    cls_logits: Tensor,
    mask_logits: Tensor,
    targets: list[tuple[Tensor, Tensor]],
    float_masks: Tensor,
    starts: list[int],
    *,
    num_classes: int,
    num_points: int,
    no_object_weight: float,
    mask_parts: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """loss_cls, loss_mask, loss_dice (unweighted) of one prediction (B, Q, K+1), (B, Q, h, w); with ``mask_parts``
    (mask embeddings (B, Q, C), mask features (B, C, h, w)) the gradient flows through them (`matched_logits`)."""
    B, Q = cls_logits.shape[:2]
    labels = torch.full((B, Q), num_classes, dtype=torch.long, device=cls_logits.device)  # unmatched: no object
    matched_images, matched_queries, matched_targets = [], [], []  # matched_targets: indices into float_masks
    for b, (gt_labels, _) in enumerate(targets):
        if len(gt_labels) == 0:
            continue
        points = torch.rand(1, num_points, 2, device=cls_logits.device)  # shared by predictions and targets
        gt_masks = float_masks[starts[b] : starts[b] + len(gt_labels)]
        with torch.no_grad():  # the masks as channels of one map: the points' weights are computed once, not per mask
            pred_points = point_sample(mask_logits[b][None], points)[0]  # (Q, P)
            gt_points = point_sample(gt_masks.transpose(0, 1), points)[0]  # (G, P)
            rows, cols = hungarian_match(match_cost(cls_logits[b], pred_points, gt_labels, gt_points))
        labels[b, rows] = gt_labels[cols]
        matched_images.append(torch.full_like(rows, b))
        matched_queries.append(rows)
        matched_targets.append(cols + starts[b])

    class_weight = torch.ones(num_classes + 1, device=cls_logits.device)
    class_weight[-1] = no_object_weight
    flat = labels.flatten()
    ce = F.cross_entropy(cls_logits.flatten(0, 1), flat, weight=class_weight, reduction="sum")
    loss_cls = ce / (class_weight[flat].sum() + EPS)

    # mmdet's avg_factor: every image counts at least one mask (its sampling result's max(num_pos, 1)), also one
    # whose crop has no labeled pixel; averaged over processes, at least 1
    num_masks = sum(len(rows) for rows in matched_queries) + sum(len(gt_labels) == 0 for gt_labels, _ in targets)
    num_masks = max(float(mean_across_processes(cls_logits.new_tensor(float(num_masks)))), 1.0)
    if not matched_queries:  # no labeled pixel in the batch: zero mask losses that keep the graph
        zero = sum(part.sum() for part in mask_parts or (mask_logits,)) * 0.0
        return loss_cls, zero, zero
    # (M, 1, h, w): one gather of every image's matched predictions (one gradient scatter in the backward pass)
    preds = mask_logits[torch.cat(matched_images), torch.cat(matched_queries)][:, None]
    order = torch.cat(matched_targets)  # the mask of each matched prediction, in float_masks
    with torch.no_grad():
        points = uncertain_points(preds, num_points)
        # each target mask sampled at its prediction's points, in place: the masks are never gathered (copied)
        at_masks = points.new_zeros(len(float_masks), num_points, 2)
        at_masks[order] = points
        point_targets = point_sample(float_masks, at_masks)[order, 0]
    if mask_parts is not None:
        images = [b for b, (gt_labels, _) in enumerate(targets) if len(gt_labels)]  # those of matched_queries
        preds = matched_logits(*mask_parts, images, matched_queries)[:, None]
    point_logits = point_sample(preds, points)[:, 0]  # (M, P)
    loss_dice = dice_loss(point_logits, point_targets, num_masks)
    bce = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="sum")
    loss_mask = bce / (num_masks * num_points + EPS)
    return loss_cls, loss_mask, loss_dice


def mask2former_losses(
    all_cls: list[Tensor],
    all_masks: list[Tensor],
    labels: Tensor,
    *,
    num_classes: int,
    ignore_index: int = 255,
    num_points: int = 12544,
    no_object_weight: float = 0.1,
    weights: tuple[float, float, float] = (2.0, 5.0, 5.0),
    mask_parts: tuple[list[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Weighted losses of every prediction: ``loss_*`` for the last, ``d{i}.loss_*`` for the others.

    labels (B, H, W) are train ids at the input resolution; each prediction is matched independently. With
    ``mask_parts`` (each prediction's mask embeddings (B, Q, C), the mask features (B, C, h, w)) the mask losses
    back-propagate through them, matched queries only, and ``all_masks`` need no gradient.
    """
    targets = [semantic_targets(label, ignore_index) for label in labels]
    float_masks, starts = _float_targets(targets)
    losses: dict[str, Tensor] = {}
    for i, (cls, masks) in enumerate(zip(all_cls, all_masks, strict=True)):
        terms = _single_prediction_losses(
            cls,
            masks,
            targets,
            float_masks,
            starts,
            num_classes=num_classes,
            num_points=num_points,
            no_object_weight=no_object_weight,
            mask_parts=None if mask_parts is None else (mask_parts[0][i], mask_parts[1]),
        )
        prefix = "" if i == len(all_cls) - 1 else f"d{i}."
        for name, value, weight in zip(("loss_cls", "loss_mask", "loss_dice"), terms, weights, strict=True):
            losses[prefix + name] = value * weight
    return dict(sorted(losses.items(), key=lambda kv: (kv[0].startswith("d"), kv[0])))
