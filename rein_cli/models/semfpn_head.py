"""Semantic FPN (Kirillov et al. 2019) as MMSegmentation configures it: the FPN neck, then the FPN decode head.

The paper's Table 9 swaps the Mask2Former head for this one (Rein without the token-to-query link). Sizes and
initialisation are mmseg's ``configs/_base_/models/fpn_r50.py``: neck ``FPN(out_channels=256, num_outs=4)`` (1x1
laterals and 3x3 output convs with bias, no norm, nearest top-down upsampling, Xavier-uniform init) and
``FPNHead(channels=128, feature_strides=[4, 8, 16, 32], dropout_ratio=0.1)`` (3x3 conv + BN + ReLU stages with
bilinear x2 upsampling, Kaiming-normal fan-out init, classifier ``conv_seg`` normal(0.01)), cross-entropy with
weight 1 averaged over all pixels (mmseg's default ``avg_non_ignore=False``). mmseg's SyncBN is a BatchNorm that
synchronises its statistics across GPUs; training converts it under distributed CUDA runs.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.labels import IGNORE_INDEX


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Pyramid [(B, C_i, H/4, W/4), ..., (B, C_i, H/32, W/32)] -> class logits (B, K, H/4, W/4).

    ``semantic_scores`` returns logits resized to the image, which sliding-window inference averages, as mmseg's
    encoder-decoder does; ``loss`` is mmseg's cross-entropy. The Rein queries are not used.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        *,
        neck_channels: int = 256,
        channels: int = 128,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} pyramid levels for {len(strides)} strides")
        self.laterals = nn.ModuleList(nn.Conv2d(c, neck_channels, 1) for c in in_channels)
        self.outputs = nn.ModuleList(nn.Conv2d(neck_channels, neck_channels, 3, padding=1) for _ in in_channels)
        for conv in (*self.laterals, *self.outputs):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            stages = max(1, int(math.log2(stride) - math.log2(strides[0])))
            layers: list[nn.Module] = []
            for k in range(stages):
                layers.append(_conv_bn_relu(neck_channels if k == 0 else channels, channels))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def neck(self, features: list[Tensor]) -> list[Tensor]:
        """FPN: lateral 1x1 convs, top-down sums (nearest upsampling to the finer level's size), 3x3 convs."""
        laterals = [conv(f) for conv, f in zip(self.laterals, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:])
        return [conv(x) for conv, x in zip(self.outputs, laterals, strict=True)]

    def forward(self, features: list[Tensor], queries: Tensor | None = None) -> Tensor:
        maps = self.neck(features)
        x = self.scale_heads[0](maps[0])
        for head, m in zip(self.scale_heads[1:], maps[1:], strict=True):
            y = head(m)
            x = x + (
                F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False) if y.shape != x.shape else y
            )
        return self.classifier(self.dropout(x))

    scores_are = "logits"  # what semantic_scores returns (rein_cli.engine.imagestats.class_probabilities)

    def semantic_scores(self, outputs: Tensor, size: tuple[int, int]) -> Tensor:
        """Class logits (B, K, H, W) at ``size``."""
        return F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)

    def loss(self, outputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy against (B, H, W) train ids at the label's size, 255 ignored, averaged over every pixel."""
        logits = F.interpolate(outputs, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
        return {"loss_ce": loss.mean()}
