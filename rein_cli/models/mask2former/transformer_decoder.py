"""The Mask2Former transformer decoder: masked cross-attention, then self-attention, then FFN, post-norm."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.models.mask2former.pixel_decoder import FFN


def attention(
    mha: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
) -> Tensor:
    """What ``mha(query, key, value, attn_mask=..., need_weights=False)[0]`` computes (batch first, no dropout), with
    an additive float ``mask`` (B, 1, Q, N) shared by the heads instead of a boolean one repeated per head; the
    inputs stay batch-first (no transposed copies). query (B, Q, C), key and value (B, N, C)."""
    B, Q, C = query.shape
    heads = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).view(B, Q, heads, C // heads).transpose(1, 2)
    k = F.linear(key, w_k, b_k).view(B, -1, heads, C // heads).transpose(1, 2)
    v = F.linear(value, w_v, b_v).view(B, -1, heads, C // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, Q, C / heads)
    return mha.out_proj(out.transpose(1, 2).reshape(B, Q, C))


class DecoderLayer(nn.Module):
    """Cross-attention (masked) -> LN -> self-attention -> LN -> FFN -> LN, each with its residual.

    Queries and keys get their positions added; values do not.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attn_mask: Tensor
    ) -> Tensor:
        """query (B, Q, C); memory (B, HW, C); attn_mask (B, 1, Q, HW), added to the attention logits (-inf =
        blocked)."""
        q = query + query_pos
        query = self.norm1(query + attention(self.cross_attn, q, memory + memory_pos, memory, attn_mask))
        q = query + query_pos
        query = self.norm2(query + attention(self.self_attn, q, q, query))
        return self.norm3(self.ffn(query))


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int = 9, dim: int = 256, num_heads: int = 8, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(dim)
