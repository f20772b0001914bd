"""The parameter-efficient baselines of the paper's Table 3 beside Rein: LoRA, AdaptFormer and VPT-deep.

Each trains its own parameters and the head on a frozen ViT, with the Mask2Former head's learned queries:

- ``lora`` (Hu et al. 2022): low-rank updates ``alpha / r * B A`` of the attention's q, k and v projections,
  injected into the timm model by the `peft` library (an optional extra: ``pip install 'rein-cli[lora]'``).
- ``adaptformer`` (Chen et al. 2022): per block a parallel bottleneck ``scale * up(relu(down(x)))`` of the
  residual stream entering the MLP branch, added to the block's output.
- ``vpt`` (Jia et al. 2022, VPT-deep): per block ``length`` learnable prompt tokens inserted after the prefix
  tokens before the block and removed from its output.

LoRA and AdaptFormer start as the frozen backbone (their last projection is zero); VPT does not. Which backbones
each runs on and how it is attached is in `rein_cli.models.methods`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rein_cli.errors import ReinError
from rein_cli.models.backbone import PATCH_SIZE

# The attention projections LoRA adapts: timm's fused qkv Linear, or EVA02's separate q, k and v projections
# (peft matches the whole module name against these patterns).
LORA_TARGETS = {
    "vit": r"blocks\.\d+\.attn\.qkv",
    "sam": r"blocks\.\d+\.attn\.qkv",
    "eva": r"blocks\.\d+\.attn\.(q_proj|k_proj|v_proj)",
}
LORA_INSTALL = "pip install 'rein-cli[lora]'"


def inject_lora(vit: nn.Module, targets: str, *, rank: int, alpha: int, dropout: float) -> None:
    """LoRA (peft's) on the ``targets`` Linears of ``vit``: only the new A and B train; B is zero, so the model
    computes what it did before. Their dropout follows the segmentor's train/eval mode (`FrozenBackbone.train`)."""
    try:
        import peft
    except ImportError as err:
        raise ReinError(f"method lora needs the peft library, which is not installed: {LORA_INSTALL}") from err
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    peft.inject_adapter_in_model(config, vit)
    for name, module in vit.named_modules():
        if name.rsplit(".", 1)[-1] == "lora_dropout":
            for dropout_layer in module.values():
                dropout_layer.follows_train_mode = True
    for name, p in vit.named_parameters():  # peft freezes the rest; the frozen backbone's weights stay frozen
        p.requires_grad_(".lora_" in name)


class AdaptFormer(nn.Module):
    """Parallel bottleneck adapters (AdaptMLP), one per block, on the residual stream entering the MLP branch.

    For block ``i`` with input ``x`` and ``h`` the input of its ``norm2`` (x plus the attention branch)::

        out = block(x) + scale * up_i(relu(down_i(h)))

    ``h`` is captured by a forward pre-hook on ``norm2`` (`attach`), so the timm model's names stay unchanged.
    Initialised as AdaptFormer: ``down`` as PyTorch's Linear weight (kaiming uniform, a = sqrt(5)), ``up`` and both
    biases zero, so the backbone starts unchanged.
    """

    def __init__(self, depth: int, embed_dim: int, *, bottleneck: int = 64, scale: float = 0.1) -> None:
        super().__init__()
        self.scale = scale  # fixed, not learned
        self.down = nn.ModuleList(nn.Linear(embed_dim, bottleneck) for _ in range(depth))
        self.up = nn.ModuleList(nn.Linear(bottleneck, embed_dim) for _ in range(depth))
        for down, up in zip(self.down, self.up, strict=True):
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(down.bias)
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self._inputs: dict[int, Tensor] = {}  # norm2's input of each block, from its running forward pass
        self._hooks: list = []

    def attach(self, blocks: nn.ModuleList) -> None:
        """Capture the input of every block's ``norm2`` (the pre-norm MLP branch's residual stream)."""
        if len(blocks) != len(self.down):
            raise ReinError(f"AdaptFormer has {len(self.down)} adapters for {len(blocks)} blocks")
        for i, block in enumerate(blocks):
            if not isinstance(getattr(block, "norm2", None), nn.Module):
                raise ReinError(f"AdaptFormer needs a pre-norm block with norm2; {type(block).__name__} has none")
            self._hooks.append(block.norm2.register_forward_pre_hook(self._capture(i)))

    def _capture(self, layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            self._inputs[layer] = args[0]

        return hook

    def before(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        return x

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """Block ``layer``'s output tokens ``x`` (B, P+N, C) plus the adapter of what its ``norm2`` received."""
        h = self._inputs.pop(layer, None)
        if h is None:
            raise ReinError(f"AdaptFormer: block {layer} ran without its norm2 hook; attach() the adapters first")
        delta = self.up[layer](torch.relu(self.down[layer](h))) * self.scale
        return x + delta

    def queries(self) -> None:
        return None


class VisualPrompts(nn.Module):
    """VPT-deep: ``length`` learnable prompt tokens per block, inserted after the prefix (class, register) tokens
    before the block and removed from its output, so the next block and the pyramid see prefix and patch tokens.

    Initialised as VPT: uniform in +-sqrt(6 / (3 * p * p + C)) with our patch size p = 16.
    """

    def __init__(self, depth: int, embed_dim: int, *, length: int = 150, patch_size: int = PATCH_SIZE) -> None:
        super().__init__()
        self.length = length
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + embed_dim))
        self.vpt_prompts = nn.Parameter(torch.empty(depth, length, embed_dim))
        nn.init.uniform_(self.vpt_prompts, -bound, bound)

    def before(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """(B, P+N, C) -> (B, P+L+N, C): layer ``layer``'s prompts after the P prefix tokens."""
        prompts = self.vpt_prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :num_prefix_tokens], prompts, x[:, num_prefix_tokens:]], dim=1)

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """(B, P+L+N, C) -> (B, P+N, C): the block's outputs at the prompts dropped."""
        return torch.cat([x[:, :num_prefix_tokens], x[:, num_prefix_tokens + self.length :]], dim=1)

    def queries(self) -> None:
        return None
