"""Tiny official-format release files and the releases that name them, for download tests; also a command line in
a process of its own with those releases known (``python -m tests.fake_releases ARGS``), for tests that need two
processes at once.

The tiny release is a DINOv2-S of 4 blocks of width 32 with Rein and the full Mask2Former head (about 80 MB)."""

from __future__ import annotations

import io
import os
import sys

from .helpers import VIT

DINOV2_S = "timm/vit_small_patch14_dinov2.lvd142m"
TINY = "rein-tiny-dinov2-s"
OTHER = "rein-tiny-other"  # another release whose file has the same name, under another tag
PATHS = {TINY: "TINY%2BDINOv2-S/iter_40000_published.pth", OTHER: "TINY%2BOther/iter_40000_published.pth"}


def release_state(seed: int = 1, scale: float = 0.3) -> dict:
    """The official state dict (Rein + Mask2Former head, no backbone) of a tiny DINOv2-S model."""
    import torch

    from rein_cli.engine.convert import to_official
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(seed)
    model = build_segmentor("dinov2-s", crop_size=64, feature_indices=[0, 1, 2, 3], backbone_kwargs=VIT)
    with torch.no_grad():
        model.backbone.reins.scale.fill_(scale)
    return {to_official(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def saved(obj: object) -> bytes:
    """``obj`` as ``torch.save`` writes it."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def release_file(state: dict) -> bytes:
    """A release file as the official repository publishes one: the state dict under ``state_dict``, with ``meta``."""
    return saved({"meta": {"iter": 40000}, "state_dict": state})


def tiny_releases() -> dict:
    """{name: Release} of the two tiny releases (same file name, different tags)."""
    from rein_cli.zoo.releases import Release, Reported, Setting

    settings = {"feature_indices": Setting((0, 1, 2, 3), "test"), "backbone_kwargs": Setting(VIT, "test")}
    return {
        name: Release(
            name,
            path,
            "dinov2-s",
            64,
            "gta5",
            f"a tiny DINOv2-S release for tests ({name})",
            settings,
            {"synthetic-fog": (Reported(12.5, "val", "test fixture"),)},
        )
        for name, path in PATHS.items()
    }


def timm_weights(arch: str, **kwargs) -> bytes:
    """A timm checkpoint as the Hub serves it (native patch size and position grid)."""
    import timm
    import torch
    from safetensors.torch import save as safetensors_bytes

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    return safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()})


def child_env(hub_url: str, home, hub_cache, **extra: str) -> dict:
    """The environment of `main` in a process of its own: the worktree's rein, the fake Hub online and ``home``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {
        **os.environ,
        "PYTHONPATH": root,
        "HF_ENDPOINT": hub_url,
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "0",
        "REIN_HOME": str(home),
        "REIN_RELEASES_URL": hub_url + "/releases",
        "TQDM_DISABLE": "1",
        **extra,
    }


def main(args: list[str]) -> None:
    """The command line with the tiny releases known by name."""
    from rein_cli.cli import run
    from rein_cli.zoo.releases import RELEASES

    RELEASES.update(tiny_releases())
    run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
