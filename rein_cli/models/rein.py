"""Rein: learnable tokens that refine a frozen backbone's features after every block."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Reins(nn.Module):
    """Full-rank Rein tokens, one set per backbone layer, with shared MLPs and one scalar scale.

    For the features ``f`` of layer ``i`` and its tokens ``t`` (T, C)::

        a = softmax(f @ t.T / sqrt(C))[:, 1:]           # token 0 is an attention sink, dropped
        delta = mlp_delta_f(a @ mlp_token2feat(t[1:]) + f)
        f_out = f + scale * delta

    Parameter names and initialisation follow the official implementation, so its
    ``backbone.reins.*`` state dict (prefix stripped) loads with ``strict=True``.

    The paper's ablations (Table 6) switch parts off: ``shared_mlp=False`` gives every layer its own
    ``mlp_token2feat``, ``mlp_delta_f`` and ``transform`` (``merge`` and ``scale`` stay shared);
    ``link=False`` drops the token-to-query link (no ``transform``, no ``merge``; ``queries()`` is None and the
    head learns its own queries).
    """

    def __init__(
        self,
        depth: int,
        embed_dim: int,
        patch_size: int,
        *,
        token_length: int = 100,
        query_dim: int = 256,
        scale_init: float = 1e-3,
        link: bool = True,
        shared_mlp: bool = True,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embed_dim = embed_dim
        self.token_length = token_length
        self.query_dim = query_dim
        self.link = link
        self.shared_mlp = shared_mlp
        self.scale = nn.Parameter(torch.tensor(scale_init))  # 0-dim, shared by all layers
        self.mlp_token2feat = self._linear(embed_dim, embed_dim)
        self.mlp_delta_f = self._linear(embed_dim, embed_dim)
        if link:
            self.transform = self._linear(embed_dim, query_dim)
            self.merge = nn.Linear(3 * query_dim, query_dim)
        self._create_tokens(patch_size)

    def _linear(self, dim_in: int, dim_out: int) -> nn.Module:
        """One Linear shared by all layers, or one per layer (``shared_mlp=False``)."""
        if self.shared_mlp:
            return nn.Linear(dim_in, dim_out)
        return nn.ModuleList(nn.Linear(dim_in, dim_out) for _ in range(self.depth))

    def _at(self, module: nn.Module, layer: int) -> nn.Module:
        return module if self.shared_mlp else module[layer]

    def _create_tokens(self, patch_size: int) -> None:
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + self.embed_dim))
        self.learnable_tokens = nn.Parameter(torch.empty(self.depth, self.token_length, self.embed_dim))
        nn.init.uniform_(self.learnable_tokens, -bound, bound)

    def tokens(self, layer: int | None = None) -> Tensor:
        """Tokens of one layer (T, C), or of all layers (L, T, C) when ``layer`` is None."""
        return self.learnable_tokens if layer is None else self.learnable_tokens[layer]

    def before(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """A block's input passes unchanged (Rein acts on block outputs only)."""
        return x

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """Refine the block output ``x`` (B, P+N, C); the P prefix tokens pass through untouched."""
        prefix, feats = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]  # (B, P, C), (B, N, C)
        tokens = self.tokens(layer)  # (T, C)
        attn = torch.einsum("bnc,tc->bnt", feats, tokens) * self.embed_dim**-0.5
        attn = attn.softmax(dim=-1)[:, :, 1:]  # softmax over all T tokens, then drop token 0: (B, N, T-1)
        delta = torch.einsum("bnt,tc->bnc", attn, self._at(self.mlp_token2feat, layer)(tokens[1:]))  # (B, N, C)
        delta = self._at(self.mlp_delta_f, layer)(delta + feats) * self.scale
        return torch.cat([prefix, feats + delta], dim=1)

    def queries(self) -> Tensor | None:
        """Mask2Former queries (T, Q) from the tokens of all layers: max, mean and last over layers; None without
        the link."""
        if not self.link:
            return None
        if self.shared_mlp:
            tokens = self.transform(self.tokens())  # (L, T, C) -> (L, T, Q)
        else:
            tokens = torch.stack([transform(t) for transform, t in zip(self.transform, self.tokens(), strict=True)])
        tokens = tokens.permute(1, 2, 0)  # (T, Q, L)
        summary = torch.stack([tokens.amax(dim=-1), tokens.mean(dim=-1), tokens[..., -1]], dim=-1)  # (T, Q, 3)
        return self.merge(summary.flatten(1))  # interleaved per channel: (T, 3Q) -> (T, Q)


class LoRAReins(Reins):
    """Rein with low-rank tokens: the tokens of layer ``i`` are ``A[i] @ B[i]`` (the paper's default)."""

    def __init__(
        self,
        depth: int,
        embed_dim: int,
        patch_size: int,
        *,
        token_length: int = 100,
        rank: int = 16,
        query_dim: int = 256,
        scale_init: float = 1e-3,
        link: bool = True,
        shared_mlp: bool = True,
    ) -> None:
        self.rank = rank
        super().__init__(
            depth,
            embed_dim,
            patch_size,
            token_length=token_length,
            query_dim=query_dim,
            scale_init=scale_init,
            link=link,
            shared_mlp=shared_mlp,
        )

    def _create_tokens(self, patch_size: int) -> None:
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + math.sqrt(self.embed_dim * self.rank)))
        self.learnable_tokens_a = nn.Parameter(torch.empty(self.depth, self.token_length, self.rank))
        self.learnable_tokens_b = nn.Parameter(torch.empty(self.depth, self.rank, self.embed_dim))
        nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
        nn.init.uniform_(self.learnable_tokens_b, -bound, bound)

    def tokens(self, layer: int | None = None) -> Tensor:
        if layer is None:
            return self.learnable_tokens_a @ self.learnable_tokens_b  # (L, T, r) @ (L, r, C) -> (L, T, C)
        return self.learnable_tokens_a[layer] @ self.learnable_tokens_b[layer]  # (T, C)
