"""The segmentor: pyramid shapes, freezing, padding, and pretrained weights resized the official way."""

import pytest
import torch

from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor, count_parameters

from .helpers import TINY


def test_only_rein_and_head_train_and_the_backbone_never_changes(tiny_model):
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.reins", "head.laterals", "head.fuse", "head.classifier"}
    before = {k: v.clone() for k, v in tiny_model.backbone.vit.state_dict().items()}
    rein_before = tiny_model.backbone.reins.learnable_tokens_a.clone()
    optimizer = torch.optim.AdamW([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    tiny_model.train()
    assert not tiny_model.backbone.vit.training and tiny_model.head.training
    loss = tiny_model.training_loss(torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64)))["loss_ce"]
    loss.backward()
    optimizer.step()
    for key, value in tiny_model.backbone.vit.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in tiny_model.backbone.vit.parameters())
    assert not torch.equal(tiny_model.backbone.reins.learnable_tokens_a, rein_before)  # gradient reached layer-0 tokens


def test_semantic_scores_pad_to_the_patch_size_and_are_probabilities(tiny_model):
    scores = tiny_model.eval().semantic_scores(torch.randn(1, 3, 70, 90))
    assert scores.shape == (1, 19, 70, 90)
    torch.testing.assert_close(scores.sum(1), torch.ones(1, 70, 90))


def test_unknown_names_and_bad_sizes_are_clear_errors():
    with pytest.raises(ReinError, match=r'unknown backbone "dinov2-xl".*did you mean "dinov2-l"'):
        build_segmentor("dinov2-xl")
    with pytest.raises(ReinError, match="multiple of 16"):
        build_segmentor("vit-tiny", crop_size=100)
    with pytest.raises(ReinError, match="feature_indices"):
        build_segmentor(**{**TINY, "feature_indices": [0, 1, 2, 9]})


def test_dinov2_large_shapes_without_weights():
    # Real DINOv2-L geometry on the meta device: no memory, no download.
    with torch.device("meta"):
        model = build_segmentor("dinov2-l", crop_size=512)
    assert count_parameters(model.backbone.reins, True) == 2_990_081
    assert count_parameters(model.backbone.vit) == 304_199_680 - 1024  # the official count includes mask_token
    assert model.backbone.feature_indices == (7, 11, 15, 23)
    assert model.backbone.vit.pos_embed.shape == (1, 1025, 1024)


def test_the_model_declares_its_classes_palette_normalisation_and_config():
    model = build_segmentor(**TINY)
    assert model.classes[0] == "road" and len(model.palette) == 19 and model.palette[0] == (128, 64, 128)
    assert model.mean == model.backbone.mean and model.crop_size == 64
    assert model.config.backbone == "vit-tiny" and model.config.feature_indices == (0, 1, 2, 3)
    assert model.config.backbone_kwargs == TINY["backbone_kwargs"] and model.config.pretrained is False
    two = build_segmentor(**{**TINY, "num_classes": 2}, classes=["sky", "ground"], palette=[[0, 0, 255], [0, 255, 0]])
    assert two.classes == ("sky", "ground") and two.palette == ((0, 0, 255), (0, 255, 0))
    assert build_segmentor(**{**TINY, "num_classes": 3}).classes == ("class_0", "class_1", "class_2")
    with pytest.raises(ReinError, match="2 outputs need 2 class names and colours, got 3"):
        build_segmentor(**{**TINY, "num_classes": 2}, classes=["a", "b", "c"])
    with pytest.raises(
        ReinError, match=r"method = 'dora' is invalid; it must be rein, frozen, full, lora, adaptformer"
    ):
        build_segmentor(**TINY, method="dora")
