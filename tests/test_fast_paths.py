"""The faster forms of the Mask2Former head's operations against slow references written from their definitions.

They may sum in another order, within the project's tolerances: scores within 1e-4 of their scale, each loss term
within 1e-5 relative, gradients within 1e-4 of their scale (float32)."""

from __future__ import annotations

import torch
from torch import nn

from rein_cli.models.mask2former.criterion import mask2former_losses, matched_logits
from rein_cli.models.mask2former.deform_attn import ms_deform_attn
from rein_cli.models.mask2former.head import additive_mask, unmask_full_rows
from rein_cli.models.mask2former.matcher import point_sample
from rein_cli.models.mask2former.transformer_decoder import attention

from .helpers import tiny_family


def scale_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max()) if a.numel() else 0.0


def test_attention_computes_what_multihead_attention_does_with_its_mask_repeated_per_head():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    query, key, value = torch.randn(2, 7, 32), torch.randn(2, 11, 32), torch.randn(2, 11, 32)
    blocked = unmask_full_rows(torch.rand(2, 7, 11) < 0.6)
    blocked[0, 3] = True  # a row that blocks every key attends everywhere
    blocked = unmask_full_rows(blocked)
    per_head = blocked.unsqueeze(1).expand(-1, 4, -1, -1).flatten(0, 1)  # the layout nn.MultiheadAttention takes
    inputs = [t.clone().requires_grad_() for t in (query, key, value)]
    reference = mha(*inputs, attn_mask=per_head, need_weights=False)[0]
    reference_grads = torch.autograd.grad(reference.square().sum(), [*inputs, *mha.parameters()])
    inputs = [t.clone().requires_grad_() for t in (query, key, value)]
    fast = attention(mha, *inputs, additive_mask(blocked))
    assert torch.isfinite(fast).all()
    fast_grads = torch.autograd.grad(fast.square().sum(), [*inputs, *mha.parameters()])
    assert scale_error(reference, fast) < 1e-6
    assert max(scale_error(a, b) for a, b in zip(reference_grads, fast_grads, strict=True)) < 1e-5
    # without a mask (the decoder's self-attention)
    with torch.no_grad():
        own = torch.randn(2, 7, 32)
        torch.testing.assert_close(attention(mha, query, query, own), mha(query, query, own, need_weights=False)[0])


def test_matched_logits_are_the_gathered_rows_of_every_querys_masks():
    torch.manual_seed(0)
    embeds, features = torch.randn(3, 10, 16), torch.randn(3, 16, 5, 6)
    images, queries = [0, 2], [torch.tensor([4, 1, 7]), torch.tensor([0])]
    every = torch.einsum("bqc,bchw->bqhw", embeds, features)
    expected = every[torch.tensor([0, 0, 0, 2]), torch.tensor([4, 1, 7, 0])]
    assert scale_error(expected, matched_logits(embeds, features, images, queries)) < 1e-6


def test_the_losses_through_the_matched_queries_equal_those_through_every_querys_masks():
    """The head's losses (gradients through the matched queries' logits only) against the losses computed on every
    query's full mask logits with their gradient, as the official head does: the same 30 terms and gradients."""
    model = tiny_family("dinov2-s").train()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[1, :20] = 255
    params = [p for p in model.parameters() if p.requires_grad]

    outputs = model(images)
    assert all(not m.requires_grad for m in outputs.masks) and outputs.mask_embeds is not None
    torch.manual_seed(1)
    fast = model.head.loss(outputs, labels)
    fast_grads = torch.autograd.grad(sum(fast.values()), params, allow_unused=True)

    outputs = model(images)
    masks = [torch.einsum("bqc,bchw->bqhw", e, outputs.mask_features) for e in outputs.mask_embeds]  # with gradient
    torch.manual_seed(1)
    reference = mask2former_losses(outputs.cls, masks, labels, num_classes=model.head.num_classes)
    reference_grads = torch.autograd.grad(sum(reference.values()), params, allow_unused=True)

    assert fast.keys() == reference.keys() and len(fast) == 30
    for name in reference:
        assert abs(fast[name] - reference[name]) <= 1e-5 * abs(reference[name]), name
    for p, a, b in zip(params, reference_grads, fast_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None and a.abs().max() > 0:
            assert scale_error(a, b) < 1e-4, p.shape


def test_mask_losses_of_a_batch_without_labeled_pixels_are_zeros_that_reach_the_mask_embedding():
    model = tiny_family("dinov2-s").train()
    outputs = model(torch.randn(1, 3, 64, 64))
    losses = model.head.loss(outputs, torch.full((1, 64, 64), 255))
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    sum(losses.values()).backward()
    assert model.head.mask_embed[0].weight.grad is not None


def test_sampling_every_mask_at_shared_points_as_channels_equals_sampling_each_mask():
    """The matcher samples every query's mask at the same points: as the channels of one map, not mask by mask."""
    torch.manual_seed(0)
    masks, points = torch.randn(6, 1, 20, 24), torch.rand(1, 50, 2) * 1.1 - 0.05
    each = point_sample(masks, points.expand(6, -1, -1))[:, 0]  # (6, 50)
    torch.testing.assert_close(point_sample(masks.transpose(0, 1), points)[0], each, rtol=1e-6, atol=1e-7)


def test_deformable_attention_without_gradients_equals_its_sampling_with_grid_sample():
    """Inference weights the four corners of every sample in one embedding_bag; training samples each level with
    grid_sample and weights the samples: the same sums, in another order, with locations outside the maps too."""
    torch.manual_seed(0)
    shapes = [(3, 5), (6, 4), (8, 9)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 4, 8)
    locations = torch.rand(2, 11, 4, 3, 2, 2) * 1.4 - 0.2
    weights = torch.rand(2, 11, 4, 3, 2).softmax(-1)
    sampled = ms_deform_attn(value.clone().requires_grad_(), shapes, locations, weights)  # the grid_sample path
    with torch.no_grad():
        fast = ms_deform_attn(value, shapes, locations, weights)
        under_bf16 = ms_deform_attn(value.bfloat16(), shapes, locations, weights.bfloat16())
    assert fast.dtype == torch.float32 and under_bf16.dtype == torch.float32
    assert scale_error(sampled, fast) < 1e-6
    assert scale_error(sampled, under_bf16) < 2e-2  # the bf16 inputs' rounding, summed in float32
