"""The Mask2Former pixel decoder: a 6-layer deformable-attention encoder over strides 32/16/8 and an FPN step to 4."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.models.mask2former.deform_attn import MSDeformAttn


def sine_position_encoding(B: int, H: int, W: int, num_feats: int = 128, device=None, dtype=torch.float32) -> Tensor:
    """DETR's normalised sine encoding of an (H, W) grid: (B, 2 * num_feats, H, W), y features first.

    Temperature 10000, scale 2 pi, eps 1e-6, no offset (mmdet's SinePositionalEncoding, normalize=True).
    """
    ones = torch.ones(1, H, W, device=device, dtype=dtype)
    y = ones.cumsum(1)
    x = ones.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, device=device, dtype=dtype)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t  # (1, H, W, F)
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).expand(B, -1, -1, -1)


class ConvGN(nn.Module):
    """Conv2d then GroupNorm(32), optionally ReLU (mmcv's ConvModule with a GN norm)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, bias: bool = False, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.gn = nn.GroupNorm(32, cout)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.gn(self.conv(x)))


class FFN(nn.Module):
    """Linear -> ReLU -> Linear with the residual added (mmcv's FFN)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Post-norm: deformable self-attention -> LayerNorm -> FFN -> LayerNorm."""

    def __init__(
        self, dim: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4, ffn_dim: int = 1024
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_heads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        x = self.norm1(self.self_attn(x, x, pos, reference_points, shapes))
        return self.norm2(self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, num_layers: int = 6, **layer_args) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_args) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos, reference_points, shapes)
        return x


class PixelDecoder(nn.Module):
    """mmdet's MSDeformAttnPixelDecoder for four input levels (strides 4, 8, 16, 32).

    The three coarsest levels are projected (1x1 conv + GN), given sine positions plus a level
    encoding, and refined jointly by the deformable encoder; the stride-4 level is a lateral 1x1
    conv plus the upsampled stride-8 output, then a 3x3 conv. Returns the mask features
    (B, C, H/4, W/4) and the encoder outputs at strides 32, 16, 8.
    """

    def __init__(
        self,
        in_channels: list[int],
        dim: int = 256,
        *,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.num_levels = len(in_channels) - 1  # levels in the deformable encoder
        # input_convs[0] reads the coarsest level (stride 32), [1] stride 16, [2] stride 8
        self.input_convs = nn.ModuleList(ConvGN(c, dim, bias=True) for c in reversed(in_channels[1:]))
        self.encoder = Encoder(
            num_layers, dim=dim, num_heads=num_heads, num_levels=self.num_levels, num_points=num_points, ffn_dim=ffn_dim
        )
        self.level_encoding = nn.Embedding(self.num_levels, dim)
        self.lateral_conv = ConvGN(in_channels[0], dim)
        self.output_conv = ConvGN(dim, dim, 3, relu=True)
        self.mask_feature = nn.Conv2d(dim, dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.input_convs:
            nn.init.xavier_uniform_(conv.conv.weight)
            nn.init.zeros_(conv.conv.bias)
        for conv in (self.lateral_conv.conv, self.output_conv.conv, self.mask_feature):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # caffe2 xavier
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_encoding.weight)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        B = features[0].shape[0]
        inputs, positions, refs, shapes = [], [], [], []
        for i, conv in enumerate(self.input_convs):
            feat = features[len(features) - 1 - i]  # strides 32, 16, 8
            H, W = feat.shape[-2:]
            inputs.append(conv(feat).flatten(2).transpose(1, 2))  # (B, H*W, C)
            pos = sine_position_encoding(B, H, W, inputs[-1].shape[-1] // 2, feat.device, feat.dtype)
            positions.append((pos + self.level_encoding.weight[i].view(1, -1, 1, 1)).flatten(2).transpose(1, 2))
            ys, xs = torch.meshgrid(
                torch.arange(H, device=feat.device, dtype=feat.dtype),
                torch.arange(W, device=feat.device, dtype=feat.dtype),
                indexing="ij",
            )
            refs.append(torch.stack([(xs.flatten() + 0.5) / W, (ys.flatten() + 0.5) / H], -1))  # cell centres (x, y)
            shapes.append((H, W))
        reference_points = torch.cat(refs)[None, :, None].expand(B, -1, self.num_levels, -1)  # (B, N, levels, 2)
        memory = self.encoder(torch.cat(inputs, 1), torch.cat(positions, 1), reference_points, shapes)  # (B, N, C)
        outs = [
            m.transpose(1, 2).reshape(B, -1, H, W)
            for m, (H, W) in zip(memory.split([h * w for h, w in shapes], 1), shapes, strict=True)
        ]
        lateral = self.lateral_conv(features[0])
        y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.mask_feature(self.output_conv(y)), outs
