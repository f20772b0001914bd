"""The Mask2Former transformer decoder: masked cross-attention, then self-attention, then FFN, post-norm."""

from __future__ import annotations

from torch import Tensor, nn

from rein_cli.models.mask2former.pixel_decoder import FFN


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
        """query (B, Q, C); memory (B, HW, C); attn_mask (B * heads, Q, HW), True = blocked."""
        q = query + query_pos
        query = self.norm1(
            query + self.cross_attn(q, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False)[0]
        )
        q = query + query_pos
        query = self.norm2(query + self.self_attn(q, q, query, need_weights=False)[0])
        return self.norm3(self.ffn(query))


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int = 9, dim: int = 256, num_heads: int = 8, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(dim)
