"""A light semantic head over the feature pyramid: lateral 1x1 convs, sum at stride 4, 3x3 conv, classifier."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.labels import IGNORE_INDEX


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class FPNHead(nn.Module):
    """Per-pixel classification at stride 4. Ignores the Rein queries (a query-based head uses them).

    Every head has the same three methods, so the segmentor can swap them:
    ``forward(features, queries)``, ``semantic_scores(outputs, size)`` and ``loss(outputs, labels)``.
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), _norm(channels)) for c in in_channels
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), _norm(channels), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor], queries: Tensor | None = None) -> Tensor:
        """Pyramid [(B, C, H/4, W/4), ...] -> class logits (B, K, H/4, W/4)."""
        size = features[0].shape[-2:]
        x = sum(
            F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else lat(f)
            for lat, f in zip(self.laterals, features, strict=True)
        )
        return self.classifier(self.fuse(x))

    scores_are = "probabilities"  # what semantic_scores returns (rein_cli.engine.imagestats.class_probabilities)

    def semantic_scores(self, outputs: Tensor, size: tuple[int, int]) -> Tensor:
        """Class probabilities (B, K, H, W) at ``size``."""
        return F.interpolate(outputs, size=size, mode="bilinear", align_corners=False).softmax(dim=1)

    def loss(self, outputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy against (B, H, W) train ids, 255 ignored."""
        logits = F.interpolate(outputs, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss_ce": F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX)}
