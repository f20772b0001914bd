"""Shared fixtures: tiny models (random weights, a few thousand parameters) and a tiny synthetic benchmark."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("TQDM_DISABLE", "1")

TINY = dict(backbone="vit-tiny", crop_size=64, feature_indices=[0, 1, 2, 3], head="fpn", head_channels=16,
            backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2})  # fmt: skip
TINY_SETS = [
    "model.backbone=vit-tiny",
    "model.pretrained=false",
    "model.crop_size=64",
    "model.head=fpn",
    "model.head_channels=16",
    "model.feature_indices=[0,1,2,3]",
    "model.backbone_kwargs={'depth':4,'embed_dim':32,'num_heads':2}",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.log_interval=1",
    "eval.mode=whole",
]


@pytest.fixture
def tiny_model():
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    return build_segmentor(**TINY)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The five synthetic datasets, 8 train and 4 val scenes of 128x64."""
    from rein_cli.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, num_train=8, num_val=4, width=128, height=64, workers=1, progress=False)
    return root
