"""The Mask2Former head: deformable attention against a slow reference, shapes for every backbone family,
the semantic output, the matcher and the criterion, parameter counts and optimizer groups."""

import math

import pytest
import torch
import torch.nn.functional as F

from rein_cli.models.mask2former.criterion import dice_loss, mask2former_losses, semantic_targets, uncertain_points
from rein_cli.models.mask2former.deform_attn import MSDeformAttn, ms_deform_attn
from rein_cli.models.mask2former.head import Mask2FormerHead, additive_mask, unmask_full_rows
from rein_cli.models.mask2former.matcher import hungarian_match, match_cost, point_sample
from rein_cli.models.mask2former.pixel_decoder import sine_position_encoding
from rein_cli.models.segmentor import build_segmentor, count_parameters

from .helpers import FAMILIES, tiny_family


def bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """value (d, H, W) at normalised (x, y), align_corners False, zeros outside: by the definition."""
    d, H, W = value.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * value[:, yy, xx]
    return out


def test_deformable_attention_matches_a_slow_reference():
    torch.manual_seed(0)
    B, heads, d, points = 2, 2, 3, 2
    shapes = [(3, 4), (2, 2)]
    N = sum(h * w for h, w in shapes)
    Q = 5
    value = torch.randn(B, N, heads, d)
    locations = torch.rand(B, Q, heads, len(shapes), points, 2) * 1.4 - 0.2  # some outside the map
    weights = torch.rand(B, Q, heads, len(shapes), points)
    fast = ms_deform_attn(value, shapes, locations, weights)
    slow = torch.zeros(B, Q, heads, d)
    starts = [0, shapes[0][0] * shapes[0][1]]
    for b in range(B):
        for q in range(Q):
            for h in range(heads):
                for level, (H, W) in enumerate(shapes):
                    maps = value[b, starts[level] : starts[level] + H * W, h].T.reshape(d, H, W)
                    for p in range(points):
                        x, y = locations[b, q, h, level, p].tolist()
                        slow[b, q, h] += weights[b, q, h, level, p] * bilinear(maps, x, y)
    torch.testing.assert_close(fast, slow.flatten(2), atol=1e-5, rtol=1e-5)


def test_deformable_attention_initialisation():
    attn = MSDeformAttn(embed_dim=16, num_heads=4, num_levels=3, num_points=4)
    offsets = attn.sampling_offsets.bias.view(4, 3, 4, 2)
    torch.testing.assert_close(offsets[0, 0, :, :], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
    torch.testing.assert_close(offsets[1, 2, 1], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)  # 90 degrees, point 2
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.sampling_offsets.weight.abs().sum() == 0
    q = torch.randn(1, 6, 16)  # the output keeps the query as residual
    out = attn(q, torch.randn(1, 3, 16), torch.zeros_like(q), torch.rand(1, 6, 3, 2), [(1, 1), (1, 1), (1, 1)])
    assert out.shape == q.shape


def test_sine_position_encoding_by_hand():
    pos = sine_position_encoding(2, 2, 3, num_feats=4)
    assert pos.shape == (2, 8, 2, 3)
    y = 2 * math.pi * 1 / (2 + 1e-6)  # row 0: cumsum 1 of 2 rows, normalised to 2 pi
    x = 2 * math.pi * 2 / (3 + 1e-6)  # column 1
    dim_t = [1.0, 1.0, 100.0, 100.0]  # 10000 ** (2 * (i // 2) / 4)
    expected_y = [math.sin(y / dim_t[0]), math.cos(y / dim_t[1]), math.sin(y / dim_t[2]), math.cos(y / dim_t[3])]
    expected_x = [math.sin(x / dim_t[0]), math.cos(x / dim_t[1]), math.sin(x / dim_t[2]), math.cos(x / dim_t[3])]
    torch.testing.assert_close(pos[0, :, 0, 1], torch.tensor(expected_y + expected_x))


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_head_outputs_for_every_backbone_family(backbone):
    model = tiny_family(backbone)
    cls, masks, *_ = model(torch.randn(2, 3, 64, 96))
    assert len(cls) == len(masks) == 10  # the initial queries, then each of 9 layers
    assert all(c.shape == (2, 100, 20) for c in cls) and all(m.shape == (2, 100, 16, 24) for m in masks)
    scores = model.eval().semantic_scores(torch.randn(1, 3, 64, 96))
    assert scores.shape == (1, 19, 64, 96) and scores.min() >= 0 and scores.sum(1).max() <= 100


def test_semantic_scores_are_class_probabilities_times_mask_probabilities():
    head = Mask2FormerHead([8, 8, 8, 8], num_classes=3, num_queries=2)
    cls = torch.tensor([[[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 3.0]]])  # (B, Q, K+1)
    masks = torch.randn(1, 2, 2, 2)
    scores = head.semantic_scores(([cls], [masks]), (4, 4))
    up = F.interpolate(masks, size=(4, 4), mode="bilinear", align_corners=False).sigmoid()
    p = cls.softmax(-1)[0, :, :3]  # no-object column dropped after the softmax
    expected = p[0, :, None, None] * up[0, 0] + p[1, :, None, None] * up[0, 1]
    torch.testing.assert_close(scores[0], expected)


def test_fully_masked_rows_attend_everywhere():
    mask = torch.tensor([[[True, True, True], [True, False, True]]])
    torch.testing.assert_close(unmask_full_rows(mask), torch.tensor([[[False, False, False], [True, False, True]]]))


def test_the_attention_mask_is_thresholded_once_and_shared_by_the_heads():
    logits = torch.randn(2, 5, 12)  # (B, Q, h*w)
    mask = additive_mask(unmask_full_rows(logits.sigmoid() < 0.5))
    blocked = unmask_full_rows(logits.sigmoid() < 0.5)
    assert mask.shape == (2, 1, 5, 12) and mask.dtype == torch.float32
    assert torch.equal(mask[:, 0] == float("-inf"), blocked) and torch.equal(mask[:, 0] == 0, ~blocked)


def test_hungarian_matching_on_hand_made_costs():
    cost = torch.tensor([[4.0, 1.0], [2.0, 8.0], [3.0, 0.5]])  # 3 queries, 2 targets
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [1, 2] and cols.tolist() == [0, 1]  # 2 + 0.5 beats 1 + 2 and 3 + 1


def test_match_cost_terms_by_hand():
    cls = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))  # one query, 2 classes + no-object
    pred = torch.tensor([[0.0, 0.0]])  # logits 0: p = 0.5 at both points
    gt = torch.tensor([[1.0, 0.0]])
    bce = math.log(2)  # BCE of logit 0 against either label
    dice = 1 - (2 * 0.5 + 1) / (1.0 + 1.0 + 1)
    expected = 2.0 * -0.25 + 5.0 * bce + 5.0 * dice
    cost = match_cost(cls, pred, torch.tensor([1]), gt)
    assert cost.shape == (1, 1) and math.isclose(cost.item(), expected, rel_tol=1e-5)


def test_targets_one_mask_per_present_class():
    label = torch.tensor([[0, 0, 255], [3, 3, 0]])
    classes, masks = semantic_targets(label)
    assert classes.tolist() == [0, 3]
    assert masks.tolist() == [[[True, True, False], [False, False, True]], [[False, False, False], [True, True, False]]]


def test_point_sampling_and_uncertain_points():
    grid = torch.arange(4.0).view(1, 1, 2, 2)  # pixel centres at 0.25 and 0.75
    torch.testing.assert_close(
        point_sample(grid, torch.tensor([[[0.75, 0.25], [0.5, 0.5]]])), torch.tensor([[[1.0, 1.5]]])
    )
    torch.manual_seed(0)
    logits = torch.linspace(-5, 5, 64).view(1, 1, 8, 8)
    points = uncertain_points(logits, num_points=20)
    assert points.shape == (1, 20, 2)
    chosen = point_sample(logits, points[:, :15])[0, 0].abs()  # the 75 % chosen by uncertainty
    candidates = point_sample(logits, torch.rand(1, 4000, 2))[0, 0].abs()
    assert chosen.mean() < candidates.mean() / 2


def test_dice_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0]])
    assert math.isclose(
        dice_loss(logits, torch.tensor([[1.0, 1.0]]), 1.0).item(), 1 - (2 * 1 + 1) / (1 + 2 + 1), rel_tol=1e-6
    )


def test_losses_have_the_official_names_and_go_down():
    model = tiny_family("dinov2-s")
    images = torch.randn(2, 3, 64, 64)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 32:] = 13
    labels[1, :, :8] = 255
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    totals = []
    for step in range(6):
        torch.manual_seed(step)
        losses = model.training_loss(images, labels)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    expected = {"loss_cls", "loss_mask", "loss_dice"} | {
        f"d{i}.loss_{t}" for i in range(9) for t in ("cls", "mask", "dice")
    }
    assert set(losses) == expected and len(losses) == 30
    assert all(torch.isfinite(v) for v in losses.values())
    assert totals[-1] < 0.8 * totals[0]


def test_class_loss_weights_no_object_by_a_tenth():
    cls = torch.zeros(1, 3, 3)  # uniform over 2 classes + no-object: CE = ln 3 for every query
    masks = torch.zeros(1, 3, 4, 4)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)  # one class present: one matched query, two no-object
    losses = mask2former_losses([cls], [masks], labels, num_classes=2, num_points=16)
    # weighted mean: (1 * ln3 + 0.1 * ln3 * 2) / (1 + 0.2) = ln 3, times the weight 2.0
    assert math.isclose(losses["loss_cls"].item(), 2.0 * math.log(3), rel_tol=1e-5)
    assert math.isclose(losses["loss_mask"].item(), 5.0 * math.log(2), rel_tol=1e-5)  # logits 0 against all-ones


def test_an_image_without_labeled_pixels_still_counts_one_mask():
    torch.manual_seed(0)
    cls, masks = torch.randn(2, 5, 4), torch.randn(2, 5, 8, 8)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[1] = 255  # a crop with no labeled pixel
    torch.manual_seed(1)
    alone = mask2former_losses([cls[:1]], [masks[:1]], labels[:1], num_classes=3, num_points=16)
    torch.manual_seed(1)  # the same draws: the empty image draws no points
    both = mask2former_losses([cls], [masks], labels, num_classes=3, num_points=16)
    present = len(labels[0].unique())  # masks of the first image; the empty one adds 1 to the normaliser (mmdet)
    for name in ("loss_mask", "loss_dice"):
        assert math.isclose(both[name].item(), alone[name].item() * present / (present + 1), rel_tol=1e-6)


def test_parameter_counts_match_the_official_model():
    with torch.device("meta"):
        large = build_segmentor("dinov2-l")
        heads = [count_parameters(build_segmentor(n).head) for n in ("dinov2-s", "dinov2-b", "dinov2-g")]
    assert count_parameters(large.backbone.reins) == 2_990_081
    assert count_parameters(large.head) == 20_579_796
    assert count_parameters(large, trainable=True) == 23_569_877
    assert heads == [19_924_436, 20_317_652, 21_104_084]


@pytest.mark.parametrize("method", ["frozen", "full"])
@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_baselines_for_every_family(backbone, method):
    model = tiny_family(backbone, method=method)
    vit_trains = {p.requires_grad for p in model.backbone.vit.parameters()}
    assert vit_trains == {method == "full"}
    assert hasattr(model.head, "query_embed") and not hasattr(model.head, "querys2feat")
    assert count_parameters(model.backbone, trainable=True) == (
        0 if method == "frozen" else count_parameters(model.backbone.vit)
    )
    loss = sum(model.training_loss(torch.randn(1, 3, 64, 64), torch.randint(0, 19, (1, 64, 64))).values())
    loss.backward()
    assert model.head.query_feat.weight.grad is not None
    if backbone == "convnext-l":  # the final norm normalises the last stage: trained with the backbone in "full"
        assert (model.backbone.vit.head.norm.weight.grad is not None) == (method == "full")
