"""rein: domain-generalized semantic segmentation with frozen Vision Foundation Models and Rein."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, imported on first use so that `import rein_cli` stays cheap (no torch).
_API = {
    "Config": "rein_cli.config",
    "load_config": "rein_cli.config",
    "build_segmentor": "rein_cli.models.segmentor",
    "load_segmentor": "rein_cli.engine.checkpoint",
    "train": "rein_cli.engine.train",
    "evaluate": "rein_cli.engine.evaluate",
    "predict": "rein_cli.engine.predict",
    "generate_synthetic": "rein_cli.data.synthetic",
    "run_demo": "rein_cli.demo",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rein_cli' has no attribute {name!r}")
