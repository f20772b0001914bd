"""What a backbone name brings besides its architecture: the licence of its pretrained weights and how they are
converted for Rein (the timm model, Hub repo and feature blocks are in `rein_cli.models.backbone`)."""

from __future__ import annotations

from rein_cli.models.backbone import PATCH_SIZE, backbone_spec

# The licence of each backbone's pretrained weights, as its Hub repo states it.
BACKBONE_LICENCES = {
    "dinov2-s": "apache-2.0",
    "dinov2-b": "apache-2.0",
    "dinov2-l": "apache-2.0",
    "dinov2-g": "apache-2.0",
    "dinov2-s-reg4": "apache-2.0",
    "dinov2-b-reg4": "apache-2.0",
    "dinov2-l-reg4": "apache-2.0",
    "dinov2-g-reg4": "apache-2.0",
    "eva02-l": "mit",
    "clip-l": "mit (OpenAI CLIP weights)",
    "sam-h": "apache-2.0",
    "mae-l": "cc-by-nc-4.0 (non-commercial use only)",
    "convnext-l": "apache-2.0",
    "vit-tiny": "apache-2.0",
}


def conversion(name: str) -> str:
    """How the pretrained weights are converted before use, in words."""
    spec = backbone_spec(name)
    if spec.family == "convnext":
        return "none (a CNN: no patch embedding or position grid)"
    patch = 14 if "patch14" in spec.arch else 16
    steps = [f"patch kernel {patch} -> {PATCH_SIZE} (bicubic)"] if patch != PATCH_SIZE else []
    steps.append(f"position grid resized to the crop ({spec.pos_mode})")
    if spec.family == "sam":
        steps.append("relative-position tables resized (linear)")
    return ", ".join(steps)
