"""The Mask2Former head with Rein queries: 100 queries whose position part is the Rein queries."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.models.mask2former.criterion import mask2former_losses
from rein_cli.models.mask2former.pixel_decoder import PixelDecoder, sine_position_encoding
from rein_cli.models.mask2former.transformer_decoder import TransformerDecoder


def unmask_full_rows(attn_mask: Tensor) -> Tensor:
    """A query whose mask blocks every key attends everywhere instead (True = blocked)."""
    return attn_mask & (attn_mask.sum(-1, keepdim=True) != attn_mask.shape[-1])


def additive_mask(attn_mask: Tensor) -> Tensor:
    """(B, Q, N) True = blocked -> (B, 1, Q, N) float, -inf where blocked: added to every head's attention logits
    (nn.MultiheadAttention turns a boolean mask into the same, repeated for each head)."""
    return torch.zeros(attn_mask.shape, dtype=torch.float32, device=attn_mask.device).masked_fill_(
        attn_mask, float("-inf")
    )[:, None]


class HeadOutputs(NamedTuple):
    """The head's predictions: class logits [(B, Q, K+1)] and mask logits [(B, Q, H/4, W/4)], one per prediction.

    In training (gradients on), the mask logits carry no gradient: the losses compute the logits of the matched
    queries alone again from ``mask_embeds`` [(B, Q, C)] and ``mask_features`` (B, C, H/4, W/4), which do, instead of
    the gradient of every query's full-resolution mask (`rein_cli.models.mask2former.criterion.matched_logits`)."""

    cls: list[Tensor]
    masks: list[Tensor]
    mask_embeds: list[Tensor] | None = None
    mask_features: Tensor | None = None


class Mask2FormerHead(nn.Module):
    """Pixel decoder + 9-layer masked-attention decoder; class and mask predictions per query.

    ``forward(features, queries)`` takes the 4-level pyramid and, from Rein, queries (T, 256): they are
    the positional queries, and ``querys2feat`` of them the content queries. Without Rein
    (``learned_queries=True``) both come from learned embeddings, as in the standard head.
    Returns `HeadOutputs`: class logits [(B, Q, K+1)] x 10 and mask logits [(B, Q, H/4, W/4)] x 10, from the
    initial queries, then after every decoder layer. Names and initialisation follow the official head.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int = 19,
        *,
        num_queries: int = 100,
        dim: int = 256,
        num_heads: int = 8,
        num_decoder_layers: int = 9,
        learned_queries: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_queries, self.num_heads = num_classes, num_queries, num_heads
        self.pixel_decoder = PixelDecoder(in_channels, dim, num_heads=num_heads)
        self.num_levels = self.pixel_decoder.num_levels
        self.transformer_decoder = TransformerDecoder(num_decoder_layers, dim, num_heads)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.cls_embed = nn.Linear(dim, num_classes + 1)  # the last class is "no object"
        self.mask_embed = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(True), nn.Linear(dim, dim), nn.ReLU(True), nn.Linear(dim, dim)
        )
        if learned_queries:
            self.query_embed = nn.Embedding(num_queries, dim)
            self.query_feat = nn.Embedding(num_queries, dim)
        else:
            self.querys2feat = nn.Linear(dim, dim)
        for p in self.transformer_decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def _queries(self, queries: Tensor | None, B: int) -> tuple[Tensor, Tensor]:
        """(content, position) queries, each (B, Q, C)."""
        if queries is None:
            return self.query_feat.weight.expand(B, -1, -1), self.query_embed.weight.expand(B, -1, -1)
        if queries.shape[0] != self.num_queries:
            raise ValueError(f"got {queries.shape[0]} queries, the head expects {self.num_queries}")
        position = queries.expand(B, -1, -1)
        return self.querys2feat(position), position

    def _predict(
        self, query: Tensor, mask_features: Tensor, next_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class logits, mask embeddings and logits, and the next layer's attention mask (B, Q, h*w), True where
        sigmoid < 0.5 (the same for every head). The mask logits carry no gradient (see `HeadOutputs`)."""
        query = self.transformer_decoder.post_norm(query)
        cls = self.cls_embed(query)
        embeds = self.mask_embed(query)
        with torch.no_grad():
            masks = torch.einsum("bqc,bchw->bqhw", embeds, mask_features)
            attn = F.interpolate(masks, size=next_size, mode="bilinear", align_corners=False)
            attn = attn.flatten(2).sigmoid() < 0.5
        return cls, embeds, masks, attn

    def forward(self, features: list[Tensor], queries: Tensor | None = None) -> HeadOutputs:
        B = features[0].shape[0]
        mask_features, memories = self.pixel_decoder(features)  # memories at strides 32, 16, 8
        keys, key_pos = [], []
        for i, memory in enumerate(memories):
            H, W = memory.shape[-2:]
            keys.append(memory.flatten(2).transpose(1, 2) + self.level_embed.weight[i])  # (B, HW, C)
            pos = sine_position_encoding(B, H, W, memory.shape[1] // 2, memory.device, memory.dtype)
            key_pos.append(pos.flatten(2).transpose(1, 2))
        query, query_pos = self._queries(queries, B)
        cls, embeds, masks, attn = self._predict(query, mask_features, memories[0].shape[-2:])
        all_cls, all_embeds, all_masks = [cls], [embeds], [masks]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_levels
            attn = additive_mask(unmask_full_rows(attn))  # (B, 1, Q, h*w)
            query = layer(query, query_pos, keys[level], key_pos[level], attn)
            next_size = memories[(i + 1) % self.num_levels].shape[-2:]
            cls, embeds, masks, attn = self._predict(query, mask_features, next_size)
            all_cls.append(cls)
            all_embeds.append(embeds)
            all_masks.append(masks)
        if not torch.is_grad_enabled():
            return HeadOutputs(all_cls, all_masks)
        return HeadOutputs(all_cls, all_masks, all_embeds, mask_features)

    scores_are = "masks"  # what semantic_scores returns (rein_cli.engine.imagestats.class_probabilities)

    def semantic_scores(self, outputs: HeadOutputs, size: tuple[int, int]) -> Tensor:
        """(B, K, H, W) = sum over queries of softmax(class)[:K] x sigmoid(mask), from the last prediction."""
        cls, masks = outputs[0][-1], outputs[1][-1]
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False).sigmoid()
        return torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks)

    def loss(self, outputs: HeadOutputs, labels: Tensor) -> dict[str, Tensor]:
        """The 30 official loss terms (loss_cls/mask/dice for the last prediction, d0..d8 for the others)."""
        parts = None if outputs.mask_embeds is None else (outputs.mask_embeds, outputs.mask_features)
        return mask2former_losses(outputs.cls, outputs.masks, labels, num_classes=self.num_classes, mask_parts=parts)
