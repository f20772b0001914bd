"""mmseg's ``MultiLevelNeck``: the neck the official frozen CLIP-L config puts between the backbone and the head.

As mmseg 1.x defines it (``mmseg/models/necks/multilevel_neck.py``) with the official config's arguments
(``configs/_base_/models/clip-L_mask2former.py``: in_channels [1024] x 4, out_channels 1024, scales 4, 2, 1, 0.5,
no norm, no activation): map i goes through a 1x1 "lateral" conv to ``out_channels``, is resized by ``scales[i]``
(bilinear, ``align_corners=False``, the scale factor as given) and goes through a 3x3 conv (padding 1). Each conv is
an mmcv ``ConvModule`` without norm and activation, i.e. a Conv2d with bias held as ``.conv``, so the state-dict
keys are the official ones: ``neck.lateral_convs.{i}.conv.{weight,bias}`` and ``neck.convs.{i}.conv.{weight,bias}``.
Every conv starts Xavier-uniform (gain 1) with zero bias, as the neck's ``init_weights`` sets them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

OFFICIAL_SCALES = (4.0, 2.0, 1.0, 0.5)  # stride 16 -> strides 4, 8, 16, 32


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` without norm and activation: one biased Conv2d, named ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class MultiLevelNeck(nn.Module):
    """``forward(maps)``: len(in_channels) maps (B, C_i, h, w) -> one (B, out_channels, h * s_i, w * s_i) per scale."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, scales: Sequence[float] = OFFICIAL_SCALES):
        super().__init__()
        self.in_channels, self.out_channels = list(in_channels), out_channels
        self.scales = tuple(float(s) for s in scales)
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in self.in_channels)
        self.convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, padding=1) for _ in self.scales)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=1.0)
                nn.init.zeros_(m.bias)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if len(maps) != len(self.lateral_convs):
            raise ValueError(f"MultiLevelNeck takes {len(self.lateral_convs)} maps, got {len(maps)}")
        maps = [lateral(x) for lateral, x in zip(self.lateral_convs, maps, strict=True)]
        if len(maps) == 1:  # one input map feeds every scale
            maps = maps * len(self.scales)
        return [
            conv(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
            for conv, x, s in zip(self.convs, maps, self.scales, strict=True)
        ]
