"""Rein's ablations (the paper's Tables 6, 7 and 9): the switches `link` and `shared_mlp`, the rank, and the
Semantic FPN head. Parameter counts are measured on full-size architectures built on the meta device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rein_cli.models.rein import LoRAReins, Reins
from rein_cli.models.semfpn_head import SemanticFPNHead

from .helpers import rein, sets, tiny_family

# Table 6 (components) and Table 7 (rank): Rein's trainable parameters on a 24 x 1024 backbone; Table 9: Rein
# without the link under the Semantic FPN head. The same figures hold for DINOv2-L and EVA02-L.
ROWS = {
    "rein-core": (dict(rein=dict(rank=0, shared_mlp=False, link=False)), 52_838_401),  # 52.84M
    "+ link": (dict(rein=dict(rank=0, shared_mlp=False)), 59_332_865),  # 59.33M
    "+ layer-shared MLP": (dict(rein=dict(rank=0)), 5_016_065),  # 5.02M
    "+ low-rank tokens": ({}, 2_990_081),  # 2.99M, the default
    "r=4": (dict(rein=dict(rank=4)), 2_666_369),  # 2.67M
    "r=8": (dict(rein=dict(rank=8)), 2_774_273),  # 2.77M
    "r=32": (dict(rein=dict(rank=32)), 3_421_697),  # 3.42M
    "r=64": (dict(rein=dict(rank=64)), 4_284_929),  # 4.28M
    "semfpn": (dict(rein=dict(link=False), head="semfpn"), 2_530_817),  # 2.53M
}


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("backbone", ["dinov2-l", "eva02-l"])
@pytest.mark.parametrize("row", list(ROWS))
def test_rein_parameters_of_every_ablation_row_are_the_papers(backbone, row):
    from rein_cli.models.segmentor import build_segmentor

    kwargs, expected = ROWS[row]
    with torch.device("meta"):
        model = build_segmentor(backbone, pretrained=False, **kwargs)
    assert trainable(model.backbone) == expected
    if row == "semfpn":  # the Semantic FPN head on a 1024-wide pyramid (docs/model.md)
        assert trainable(model.head) == 5_036_179
    assert (
        round(expected / 1e6, 2)
        == {
            "rein-core": 52.84,
            "+ link": 59.33,
            "+ layer-shared MLP": 5.02,
            "+ low-rank tokens": 2.99,
            "r=4": 2.67,
            "r=8": 2.77,
            "r=32": 3.42,
            "r=64": 4.28,
            "semfpn": 2.53,
        }[row]
    )


@pytest.mark.parametrize(("backbone", "full"), [("dinov2-l", 304_198_656), ("eva02-l", 304_239_552)])
def test_the_baselines_train_the_papers_backbone_parameters(backbone, full):
    """Tables 3, 6 and 9: Full 304.20M (DINOv2-L) and 304.24M (EVA02-L), Freeze 0."""
    from rein_cli.models.segmentor import build_segmentor

    with torch.device("meta"):
        assert trainable(build_segmentor(backbone, method="full", pretrained=False).backbone) == full
        assert trainable(build_segmentor(backbone, method="frozen", pretrained=False).backbone) == 0


def test_per_layer_mlps_belong_to_their_layer_and_merge_and_scale_stay_shared():
    torch.manual_seed(0)
    reins = Reins(3, 8, 16, token_length=5, query_dim=4, shared_mlp=False)
    assert len(reins.mlp_token2feat) == len(reins.mlp_delta_f) == len(reins.transform) == 3
    assert isinstance(reins.merge, torch.nn.Linear) and reins.scale.dim() == 0
    x = torch.randn(2, 7, 8)
    before = [reins(x, i) for i in range(3)]
    with torch.no_grad():
        reins.mlp_delta_f[1].weight.add_(1.0)
    after = [reins(x, i) for i in range(3)]
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.equal(before[1], after[1])
    # layer i's output is the shared formula with layer i's own MLPs
    f, t = x[:, 1:], reins.learnable_tokens[2]
    attn = (f @ t.T * 8**-0.5).softmax(-1)[:, :, 1:]
    delta = reins.mlp_delta_f[2](attn @ reins.mlp_token2feat[2](t[1:]) + f) * reins.scale
    torch.testing.assert_close(reins(x, 2)[:, 1:], f + delta)


def test_per_layer_transforms_make_the_queries():
    torch.manual_seed(0)
    reins = LoRAReins(3, 8, 16, token_length=5, rank=2, query_dim=4, shared_mlp=False)
    per_layer = torch.stack([reins.transform[i](reins.tokens(i)) for i in range(3)], dim=-1)  # (T, Q, L)
    summary = torch.stack([per_layer.amax(-1), per_layer.mean(-1), per_layer[..., -1]], dim=-1).flatten(1)
    torch.testing.assert_close(reins.queries(), reins.merge(summary))


def test_without_the_link_there_are_no_queries_and_the_head_learns_its_own():
    model = tiny_family("dinov2-s", rein={"link": False})
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("backbone.reins.transform", "backbone.reins.merge")) for n in names)
    assert any(n.startswith("backbone.reins.transform") for n, _ in tiny_family("dinov2-s").named_parameters())
    assert model.backbone.reins.queries() is None
    assert {"head.query_feat.weight", "head.query_embed.weight"} <= names
    linked = tiny_family("dinov2-s")
    assert "head.query_feat.weight" not in {n for n, _ in linked.named_parameters()}
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    sum(model.training_loss(images, labels).values()).backward()
    assert model.backbone.reins.learnable_tokens_a.grad.abs().sum() > 0  # Rein still trains through the features


def test_the_switches_leave_the_default_model_unchanged():
    """Same seed, same parameters in the same order: the defaults build exactly the model they built before."""
    a, b = tiny_family("dinov2-s"), tiny_family("dinov2-s", rein={"link": True, "shared_mlp": True})
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.eval().semantic_scores(images), b.eval().semantic_scores(images))


def test_semantic_fpn_follows_mmseg():
    torch.manual_seed(0)
    head = SemanticFPNHead([8, 8, 8, 8], num_classes=3, neck_channels=6, channels=4)
    assert [len(h) for h in head.scale_heads] == [1, 2, 4, 6]  # conv(+upsample) stages: 1, 1, 2, 3
    assert head.laterals[0].bias is not None and head.scale_heads[0][0][0].bias is None
    assert torch.all(head.classifier.bias == 0) and head.classifier.weight.std() < 0.05
    features = [torch.randn(2, 8, 16 // 2**i, 16 // 2**i) for i in range(4)]
    # the neck: top-down sums with nearest upsampling, then 3x3 convs
    lat = [conv(f) for conv, f in zip(head.laterals, features, strict=True)]
    lat[2] = lat[2] + lat[3].repeat_interleave(2, -1).repeat_interleave(2, -2)
    lat[1] = lat[1] + lat[2].repeat_interleave(2, -1).repeat_interleave(2, -2)
    lat[0] = lat[0] + lat[1].repeat_interleave(2, -1).repeat_interleave(2, -2)
    for got, x, conv in zip(head.neck(features), lat, head.outputs, strict=True):
        torch.testing.assert_close(got, conv(x))
    head.eval()
    logits = head(features)
    assert logits.shape == (2, 3, 16, 16)
    scores = head.semantic_scores(logits, (64, 64))
    torch.testing.assert_close(scores, F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False))
    # mmseg's cross-entropy: the mean over every pixel, ignored ones counting as zero
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, :32] = 255
    per_pixel = F.cross_entropy(scores, labels, ignore_index=255, reduction="none")
    torch.testing.assert_close(head.loss(logits, labels)["loss_ce"], per_pixel.sum() / labels.numel())


def test_a_rein_model_with_the_semantic_fpn_head_trains_evaluates_and_reloads(synthetic_root, tmp_path):
    from rein_cli.config import load_config
    from rein_cli.engine.checkpoint import load_segmentor
    from rein_cli.engine.train import train

    overrides = [
        "model.backbone=dinov2-s",
        "model.pretrained=false",
        "model.crop_size=64",
        "model.head=semfpn",
        "model.rein.link=false",
        "model.feature_indices=[0,1,2,3]",
        "model.backbone_kwargs={'depth':4,'embed_dim':32,'num_heads':2}",
        f"data.root={synthetic_root}",
        "data.eval=['synthetic-fog']",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_iters=2",
        "train.device=cpu",
        "eval.mode=whole",
    ]
    run = train(load_config(None, overrides), tmp_path / "run", progress=False)
    model = load_segmentor(run / "checkpoints" / "last")
    assert type(model.head).__name__ == "SemanticFPNHead" and model.backbone.reins.queries() is None
    results = (run / "eval" / "results.json").read_text()
    assert '"synthetic-fog"' in results and '"method": "rein"' in results


def test_the_switches_are_configuration_keys_on_the_command_line(synthetic_root, tmp_path, capsys):
    code = rein(
        "train",
        *sets("model.rein.shared_mlp=false", "model.rein.rank=0", "model.rein.link=false", "data.eval=[]"),
        *sets(f"data.root={synthetic_root}"),
        "--iters",
        "1",
        "--out",
        tmp_path / "run",
        "--no-progress",
    )
    assert code == 0, capsys.readouterr().err
    config = (tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text()
    assert '"shared_mlp": false' in config and '"link": false' in config
    assert rein("train", *sets("model.rein.link=maybe"), "--out", tmp_path / "x", "--no-progress") != 0
    assert "model.rein.link must be bool, got 'maybe'" in capsys.readouterr().err
