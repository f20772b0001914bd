"""Rein math on hand-checkable cases, the official parameter names, shapes, counts and initialisation."""

import math

import pytest
import torch

from rein_cli.models.rein import LoRAReins, Reins


def identity_reins(tokens: torch.Tensor) -> Reins:
    """Reins over C = tokens.shape[-1] channels with identity MLPs, zero biases and scale 1."""
    L, T, C = tokens.shape
    rein = Reins(L, C, 16, token_length=T, query_dim=C)
    with torch.no_grad():
        rein.learnable_tokens.copy_(tokens)
        for linear in (rein.mlp_token2feat, rein.mlp_delta_f):
            linear.weight.copy_(torch.eye(C))
            linear.bias.zero_()
        rein.scale.fill_(1.0)
    return rein


def test_token_zero_is_dropped_after_the_softmax():
    # f = [1, 0]; token 0 = [0, 5] (logit 0), token 1 = [a, 0] with a / sqrt(2) = ln 3 -> weights 1/4, 3/4.
    a = math.sqrt(2) * math.log(3)
    rein = identity_reins(torch.tensor([[[0.0, 5.0], [a, 0.0]]]))
    x = torch.tensor([[[9.0, 9.0], [1.0, 0.0]]])  # (B=1, 1 prefix + 1 patch, C=2)
    out = rein(x, 0, num_prefix_tokens=1)
    # delta = mlp_delta_f(3/4 * token1 + f) = [0.75 a + 1, 0]; out = f + delta. Token 0's 1/4 is discarded
    # (no renormalisation) and its [0, 5] never reaches channel 1.
    expected = torch.tensor([0.75 * a + 2.0, 0.0])
    torch.testing.assert_close(out[0, 1], expected)
    torch.testing.assert_close(out[0, 0], x[0, 0])


def test_scale_multiplies_the_whole_delta():
    rein = identity_reins(torch.zeros(1, 3, 2))  # zero tokens: delta = mlp_delta_f(f) = f
    x = torch.tensor([[[0.0, 0.0], [2.0, -1.0]]])
    with torch.no_grad():
        rein.scale.fill_(0.25)
    torch.testing.assert_close(rein(x, 0)[0, 1], torch.tensor([2.5, -1.25]))


@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_prefix_tokens_pass_through_untouched(prefix):
    torch.manual_seed(0)
    rein = LoRAReins(depth=3, embed_dim=32, patch_size=16, token_length=10, rank=4, query_dim=8)
    with torch.no_grad():
        rein.scale.fill_(1.0)
    x = torch.randn(2, prefix + 12, 32)
    out = rein(x, 2, num_prefix_tokens=prefix)
    assert out.shape == x.shape
    assert torch.equal(out[:, :prefix], x[:, :prefix])
    assert (out[:, prefix:] - x[:, prefix:]).abs().min() > 0


def test_each_layer_uses_its_own_tokens():
    torch.manual_seed(0)
    rein = Reins(2, 8, 16, token_length=5, query_dim=4)
    with torch.no_grad():
        rein.scale.fill_(1.0)
    x = torch.randn(1, 7, 8)
    assert not torch.allclose(rein(x, 0), rein(x, 1))
    torch.testing.assert_close(rein.tokens(1), rein.learnable_tokens[1])


def test_queries_are_max_mean_last_interleaved_per_channel():
    L, T, C = 3, 4, 2
    torch.manual_seed(0)
    tokens = torch.randn(L, T, C)
    rein = identity_reins(tokens)
    with torch.no_grad():
        rein.transform.weight.copy_(torch.eye(C))
        rein.transform.bias.zero_()
    for k, summary in enumerate([tokens.amax(0), tokens.mean(0), tokens[-1]]):
        with torch.no_grad():  # merge input index q * 3 + k must hold summary k of channel q
            rein.merge.weight.zero_()
            rein.merge.bias.zero_()
            for q in range(C):
                rein.merge.weight[q, q * 3 + k] = 1.0
        torch.testing.assert_close(rein.queries(), summary)


def test_lora_tokens_are_the_product_of_a_and_b():
    rein = LoRAReins(depth=2, embed_dim=8, patch_size=16, token_length=5, rank=3)
    torch.testing.assert_close(rein.tokens(1), rein.learnable_tokens_a[1] @ rein.learnable_tokens_b[1])
    assert rein.tokens().shape == (2, 5, 8)
    assert rein.queries().shape == (5, 256)


@pytest.mark.parametrize(
    "depth, dim, lora, plain",
    [
        (12, 384, 684_033, 1_051_905),
        (12, 768, 1_741_569, 2_496_513),
        (24, 1024, 2_990_081, 5_016_065),
        (40, 1536, 6_359_041, 11_456_001),
    ],
)
def test_parameter_counts_match_the_paper(depth, dim, lora, plain):
    assert sum(p.numel() for p in LoRAReins(depth, dim, 16).parameters()) == lora
    assert sum(p.numel() for p in Reins(depth, dim, 16).parameters()) == plain


def test_official_state_dict_loads_strictly():
    shapes = {  # backbone.reins.* of the official DINOv2-L checkpoint, prefix stripped (rein-facts §4.8)
        "learnable_tokens_a": (24, 100, 16),
        "learnable_tokens_b": (24, 16, 1024),
        "scale": (),
        "mlp_token2feat.weight": (1024, 1024),
        "mlp_token2feat.bias": (1024,),
        "mlp_delta_f.weight": (1024, 1024),
        "mlp_delta_f.bias": (1024,),
        "transform.weight": (256, 1024),
        "transform.bias": (256,),
        "merge.weight": (256, 768),
        "merge.bias": (256,),
    }
    rein = LoRAReins(depth=24, embed_dim=1024, patch_size=16)
    official = {k: torch.randn(s) for k, s in shapes.items()}
    rein.load_state_dict(official, strict=True)
    assert {k: tuple(v.shape) for k, v in rein.state_dict().items()} == shapes
    torch.testing.assert_close(rein.learnable_tokens_a, official["learnable_tokens_a"])


def test_initialisation():
    torch.manual_seed(0)
    lora = LoRAReins(depth=24, embed_dim=1024, patch_size=16)
    bound = math.sqrt(6 / (3 * 16 * 16 + math.sqrt(1024 * 16)))
    assert abs(bound - 0.08183) < 1e-5
    for tokens in (lora.learnable_tokens_a, lora.learnable_tokens_b):
        assert tokens.abs().max() <= bound and tokens.abs().max() > 0.99 * bound
    plain = Reins(2, 1024, 16)
    assert abs(plain.learnable_tokens.abs().max().item() - math.sqrt(6 / 1792)) < 1e-3
    assert lora.scale.dim() == 0 and lora.scale.item() == pytest.approx(1e-3)
    assert lora.queries().shape == (100, 256)
