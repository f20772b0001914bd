"""The official Rein release files as data: where each lives, what it needs beyond its weights, what it scored.

Every figure carries its source and split; a test-server figure is labelled as such. Sources:
- "README 2024-03": the official repository's readme.md of 2024-03-04 (commit 9b70bd6), per-backbone C/B/M table;
- "README 2024": the readme.md of the CVPR release (commit 7da85bc, 2024-03-28);
- "README 2025": the later readme.md that adds the CLIP-L, SAM-H and EVA02-L rows and the +Synthia release;
- "paper Table N": Rein (CVPR 2024), arXiv v1 tables, for a model trained the same way (not necessarily this file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rein_cli.engine.results import Reported

DEFAULT_RELEASES_URL = "https://github.com/w1oves/Rein/releases/download"  # $REIN_RELEASES_URL replaces it
RELEASE_TERMS = "no licence stated for the weights; the official repository is GPL-3.0"
IMAGENET = "ImageNet mean/std: every official config's data preprocessor (rein-facts §12)"


@dataclass(frozen=True)
class Setting:
    """A model setting that is not in the weights, and where its value comes from."""

    value: Any
    source: str


@dataclass(frozen=True)
class Release:
    """One official release file. ``path`` is relative to the releases URL (``<tag>/<file>``, URL-quoted as
    published); ``unsupported`` says why rein cannot serve it (then nothing is downloaded)."""

    name: str
    path: str | None
    backbone: str | None
    crop: int
    trained_on: str
    description: str
    settings: dict[str, Setting] = field(default_factory=dict)
    reported: dict[str, tuple[Reported, ...]] = field(default_factory=dict)
    sha256: str | None = None  # published hash; none is published, so the first download's is recorded
    licence: str = RELEASE_TERMS
    unsupported: str | None = None
    notes: str = ""

    @property
    def tag(self) -> str | None:
        return self.path.split("/")[0] if self.path else None

    @property
    def file(self) -> str | None:
        return self.path.split("/")[-1] if self.path else None

    def model_settings(self) -> dict[str, Any]:
        """The settings as `ModelConfig` fields."""
        return {key: setting.value for key, setting in self.settings.items() if key in MODEL_SETTINGS}

    def assumed(self) -> list[str]:
        """The settings rein assumed for this release (its published files do not give them), one line each:
        ``<name>: <setting> = <value> (<why>)``; `rein eval` shows them beside the result."""
        return [
            f"{self.name}: {key} = {_shown(setting.value)} ({setting.source.removeprefix('assumed: ')})"
            for key, setting in self.settings.items()
            if setting.source.startswith("assumed")
        ]


def _shown(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


MODEL_SETTINGS = ("feature_indices", "backbone_kwargs")  # settings that become ModelConfig fields


def _gta_cbm(c: float, b: float, m: float, source: str = "README 2024-03") -> dict[str, tuple[Reported, ...]]:
    return {
        "cityscapes": (Reported(c, "val", source),),
        "bdd100k": (Reported(b, "val", source),),
        "mapillary": (Reported(m, "val", source),),
    }


def _paper(table: str, c: float, b: float, m: float) -> dict[str, Reported]:
    return {name: Reported(v, "val", table) for name, v in (("cityscapes", c), ("bdd100k", b), ("mapillary", m))}


def _merge(*parts: dict) -> dict[str, tuple[Reported, ...]]:
    merged: dict[str, tuple[Reported, ...]] = {}
    for part in parts:
        for target, value in part.items():
            merged[target] = merged.get(target, ()) + (value if isinstance(value, tuple) else (value,))
    return merged


L_INDICES = Setting((7, 11, 15, 23), "out_indices of the official DINOv2-L and EVA02-L configs")
S_INDICES = Setting((3, 5, 7, 11), "assumed: the release's config is not available here; rein's 12-block default")
NORM = Setting(IMAGENET, "rein-facts §12")
# Paper Table 5 (Cityscapes -> BDD100K, Mapillary) follows the paper's 512-crop protocol; the Cityscapes release is
# the 1024-crop model of the ACDC setting. The authors' 512-crop checkpoint (release tag Cityscapes512) scores
# 65.43 / 71.69 (issue #49).
TABLE5_MODEL = "a 512-crop Cityscapes model (the paper's protocol), not this 1024-crop release"
CITYS512 = "the authors' 512-crop Cityscapes checkpoint (release Cityscapes512, issue #49), not this 1024-crop release"

RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "rein-dinov2-l-gta",
            "GTAV/iter_40000_published.pth",
            "dinov2-l",
            512,
            "gta5",
            "DINOv2-L + Rein trained on GTA5 (the paper's main setting)",
            {"feature_indices": L_INDICES, "normalization": NORM},
            _merge(
                {"cityscapes": Reported(66.7, "val", "README 2024"), "bdd100k": Reported(60.0, "val", "README 2024")},
                _paper("paper Table 2", 66.4, 60.4, 66.1),
            ),
        ),
        Release(
            "rein-dinov2-l-citys",
            "Cityscapes/citys2acdc_40k_rein_head.pth",
            "dinov2-l",
            1024,
            "cityscapes",
            "DINOv2-L + Rein trained on Cityscapes at 1024 crops (the Cityscapes -> ACDC setting)",
            {"feature_indices": L_INDICES, "normalization": NORM},
            {
                "acdc": (
                    Reported(77.6, "test", "README 2024 (ACDC test server)"),
                    Reported(73.41, "val", "training log, per the authors (issue #52)"),
                ),
                "bdd100k": (
                    Reported(65.0, "val", "paper Table 5", TABLE5_MODEL),
                    Reported(65.43, "val", "the authors (issue #49)", CITYS512),
                ),
                "mapillary": (
                    Reported(72.3, "val", "paper Table 5", TABLE5_MODEL),
                    Reported(71.69, "val", "the authors (issue #49)", CITYS512),
                ),
                "cityscapes-c": (Reported(60.0, "val", "README 2024"),),
            },
            notes="ACDC per-condition test figures need the ACDC server; the 77.6 is the test 'all' figure.",
        ),
        Release(
            "rein-dinov2-s-gta",
            "GTAV%2BViT-Small/iter_40000_published.pth",
            "dinov2-s",
            512,
            "gta5",
            "DINOv2-S + Rein trained on GTA5",
            {"feature_indices": S_INDICES, "normalization": NORM},
            _gta_cbm(55.3, 53.2, 58.7),
        ),
        Release(
            "rein-dinov2-b-gta",
            "GTAV%2BViT-Base/iter_40000_published.pth",
            "dinov2-b",
            512,
            "gta5",
            "DINOv2-B + Rein trained on GTA5",
            {"feature_indices": S_INDICES, "normalization": NORM},
            _gta_cbm(64.3, 57.3, 64.8),
        ),
        Release(
            "rein-convnext-l-gta",
            "GTAV%2BConvNeXt-L/iter_40000_published.pth",
            "convnext-l",
            512,
            "gta5",
            "ConvNeXt-L (ImageNet-21k) + one Rein per stage, trained on GTA5",
            {"normalization": NORM},
            _gta_cbm(57.9, 50.3, 58.5),
            notes="per-stage Rein settings are read from the file; the release's config is not available here",
        ),
        Release(
            "rein-eva02-l-gta",
            "GTAV%2BEVA-L/iter_40000_published.pth",
            "eva02-l",
            512,
            "gta5",
            "EVA02-L + Rein trained on GTA5",
            {"feature_indices": L_INDICES, "normalization": NORM},
            _merge({"cityscapes": Reported(67.8, "val", "README 2025")}, _paper("paper Table 2", 65.3, 60.5, 64.9)),
        ),
        Release(
            "rein-clip-l-gta",
            "GTAV%2BCLIP-L/iter_40000_published.pth",
            "clip-l",
            512,
            "gta5",
            "CLIP ViT-L/14 + Rein trained on GTA5",
            {
                "feature_indices": Setting(
                    (7, 11, 15, 23), "assumed: as the other ViT-L configs; the release's config is not available here"
                ),
                "normalization": NORM,
                "structure": Setting(
                    "Rein after every block of timm's CLIP ViT-L, the class embedding added once, the bilinear pyramid",
                    "assumed: the release's config and the official Rein CLIP code are not available here (code "
                    "built on the official clip.py adds the class embedding twice; one version adds trainable fpn "
                    "layers, whose weights a release file would hold and conversion would refuse)",
                ),
            },
            _merge({"cityscapes": Reported(58.1, "val", "README 2025")}, _paper("paper Table 2", 57.1, 54.7, 60.5)),
        ),
        Release(
            "rein-sam-h-gta",
            "GTAV%2BSAM-H/iter_40000_published.pth",
            "sam-h",
            512,
            "gta5",
            "SAM ViT-H + Rein trained on GTA5",
            {
                "feature_indices": Setting((7, 15, 23, 31), "assumed: the release's config is not available here"),
                "normalization": NORM,
                "structure": Setting(
                    "Rein after every block of timm's SAM ViT-H image encoder (no SAM neck), the bilinear pyramid",
                    "assumed: the release's config and the official SAM backbone code are not available here",
                ),
            },
            _merge({"cityscapes": Reported(59.2, "val", "README 2025")}, _paper("paper Table 2", 59.6, 52.0, 62.1)),
        ),
        Release(
            "rein-dinov2-l-gta-synthia",
            "GTAV%2BSynthia/iter_40000_published.pth",
            "dinov2-l",
            512,
            "gta5+synthia",
            "DINOv2-L + Rein trained on GTA5 and SYNTHIA",
            {"feature_indices": L_INDICES, "normalization": NORM},
            _merge({"cityscapes": Reported(72.2, "val", "README 2025")}, _paper("paper Table 4", 68.1, 60.5, 67.1)),
        ),
        Release(
            "rein-dinov2-l-urbansyn",
            "to-bdd-map/usg2cbm_weight.pth",
            "dinov2-l",
            512,
            "urbansyn+gta5+synthia",
            "DINOv2-L + Rein trained on UrbanSyn, GTA5 and SYNTHIA (synthetic data only)",
            {
                "feature_indices": L_INDICES,
                "normalization": NORM,
                "crop": Setting(512, "assumed: the release's config (usg2cbm_cfg.py) is not available here"),
            },
            {"cityscapes": (Reported(78.4, "val", "README 2025"),)},
            notes="README 2024-03 also states an average of 71.7 mIoU over Cityscapes, BDD100K and Mapillary",
        ),
        Release(
            "rein-dinov2-l-semi",
            "Semi-Supervised(1%2F16)/iter_4000_published.pth",
            "dinov2-l",
            512,
            "urbansyn+gta5+synthia+cityscapes-1/16",
            "DINOv2-L + Rein with 1/16 of the Cityscapes training set added (the README's cumulative table)",
            {
                "feature_indices": L_INDICES,
                "normalization": NORM,
                "crop": Setting(512, "assumed: the release's config is not available here"),
            },
            {"cityscapes": (Reported(82.5, "val", "README 2025"),)},
        ),
        Release(
            "rein-dinov2-l-frozen-gta",
            None,
            "dinov2-l",
            512,
            "gta5",
            "the Mask2Former head for a frozen DINOv2-L (the paper's 'Freeze' baseline), trained on GTA5",
            reported=_merge(_paper("paper Table 2", 63.3, 56.1, 63.9)),
            unsupported="the release tag Head-for-Frozen-DINOv2-GTAV exists but its file name is not known here",
        ),
        Release(
            "rein-resnet50-gta",
            "GTAV%2BResNet50/iter_40000_published.pth",
            None,
            512,
            "gta5",
            "ResNet-50 (ImageNet-1k) + Rein trained on GTA5",
            reported=_gta_cbm(49.1, 41.2, 49.3),
            unsupported="ResNet backbones are not implemented in rein",
        ),
        Release(
            "rein-resnet101-gta",
            "GTAV%2BResNet101/iter_40000_published.pth",
            None,
            512,
            "gta5",
            "ResNet-101 (ImageNet-1k) + Rein trained on GTA5",
            reported=_gta_cbm(45.9, 41.6, 51.4),
            unsupported="ResNet backbones are not implemented in rein",
        ),
    )
}

# The release `rein eval --backbone NAME` uses: the backbone's GTA5 release; ACDC targets use the Cityscapes one.
DEFAULT_RELEASE = {
    "dinov2-l": "rein-dinov2-l-gta",
    "dinov2-s": "rein-dinov2-s-gta",
    "dinov2-b": "rein-dinov2-b-gta",
    "eva02-l": "rein-eva02-l-gta",
    "convnext-l": "rein-convnext-l-gta",
}  # clip-l and sam-h have releases too, but their configs (feature indices) are not known here: --adapter NAME
ACDC_RELEASE = {"dinov2-l": "rein-dinov2-l-citys"}
