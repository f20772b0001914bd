"""`rein push`: a checkpoint folder to a Hugging Face Hub model repo, with a model card that says what it is."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from rein_cli.data.registry import lookup
from rein_cli.engine.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config
from rein_cli.errors import ReinError
from rein_cli.models.backbone import backbone_spec
from rein_cli.zoo.backbones import BACKBONE_LICENCES

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_LICENCES = ("apache-2.0", "mit", "cc-by-nc-4.0")  # licence ids the Hub's card metadata knows


def push(checkpoint: Path | str, repo_id: str, *, private: bool = False) -> str:
    """Upload ``checkpoint`` (config.json, model.safetensors and a new README.md model card) to ``repo_id``;
    returns the commit URL. The folder itself is not changed."""
    from rein_cli.hub import push_folder

    folder = Path(checkpoint)
    if not REPO_ID.match(repo_id):
        raise ReinError(f'"{repo_id}" is not a Hub repo id; give it as ORG/NAME, e.g. my-lab/rein-dinov2-l-gta')
    config = read_checkpoint_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ReinError(f"{folder} has no {WEIGHTS_FILE}; push a complete checkpoint folder")
    card = model_card(config, repo_id, run=_run_dir(folder))
    with tempfile.TemporaryDirectory(prefix="rein-push-") as tmp:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            _link_or_copy(folder / name, Path(tmp) / name)
        (Path(tmp) / "README.md").write_text(card)
        return push_folder(Path(tmp), repo_id, private=private, message=f"Upload {folder.name} with rein")


def model_card(config: dict[str, Any], repo_id: str, *, run: Path | None = None) -> str:
    """A Hub model card: backbone and its licence, training data and its terms, recipe, results, how to use it."""
    model = config["model"]
    backbone = model["backbone"]
    licence = BACKBONE_LICENCES.get(backbone, "other").split(" ")[0]
    trained_on = config.get("trained_on") or (config.get("provenance") or {}).get("adapter", "")
    data = lookup(trained_on) if trained_on else None
    revision = model.get("backbone_revision")
    lines = [
        "---",
        "library_name: rein",
        f"license: {licence if licence in HUB_LICENCES else 'other'}",
        "tags: [semantic-segmentation, domain-generalization, rein]",
        "---",
        "",
        f"# Rein segmentor: {backbone} + {model['head']} head",
        "",
        f"- backbone: `{backbone}`, `{backbone_spec(backbone).hub_repo}`"
        + (f" at revision `{revision}`" if revision else "")
        + (", weights included" if config.get("backbone_in_checkpoint") else ", weights from the Hub (frozen)"),
        f"- method: `{model['method']}`, crop {model['crop_size']}, {len(config['classes'])} classes",
    ]
    if trained_on:
        iterations = f" for {config['iterations']} iterations" if config.get("iterations") else ""
        lines.append(f"- trained on `{trained_on}`{iterations}")
    provenance = config.get("provenance") or {}
    if provenance.get("source"):
        lines.append(
            f"- converted from the official release `{provenance['source']}` (SHA-256 {provenance.get('sha256')})"
        )
    lines += ["", "## Use", "", "```bash", f"rein eval hf://{repo_id} --target cityscapes"]
    lines += [f"rein predict hf://{repo_id} photos/ --out predictions", "```", "", "```python", "import rein_cli", ""]
    lines += [f'model = rein_cli.load_segmentor("hf://{repo_id}")', "```"]
    results = _results(run)
    if results:
        lines += ["", "## Results (mIoU, %)", "", "| dataset | mIoU | mAcc | aAcc | images |", "|---|---|---|---|---|"]
        for name, r in results["datasets"].items():
            values = [f"{r[k]:.2f}" if isinstance(r.get(k), float) else "-" for k in ("mIoU", "mAcc", "aAcc")]
            lines.append(f"| {name} | {' | '.join(values)} | {r.get('images', '-')} |")
        lines.append(f"\nEvaluated with `{results.get('mode')}` inference at crop {results.get('crop')}.")
    recipe = _recipe(run)
    if recipe:
        lines += ["", "## Recipe", "", "The resolved configuration of the training run:", "", "```yaml", recipe, "```"]
    lines += ["", "## Licence", ""]
    lines.append(f"- The backbone's pretrained weights: {BACKBONE_LICENCES.get(backbone, 'see its Hub repo')}.")
    if data is not None:
        lines.append(f"- The training data ({data.name}): {data.licence}.")
    lines.append("- The Rein and head weights are derived from both; use them within their terms.")
    return "\n".join(lines) + "\n"


def _run_dir(folder: Path) -> Path | None:
    """The run directory of a checkpoint saved by `rein train` (run/checkpoints/NAME), if it is one."""
    parent = folder.resolve().parent
    return parent.parent if parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file() else None


def _results(run: Path | None) -> dict | None:
    try:
        return json.loads((run / "eval" / "results.json").read_text()) if run else None
    except (OSError, ValueError):
        return None


def _recipe(run: Path | None) -> str | None:
    try:
        return (
            yaml.safe_dump(yaml.safe_load((run / "config.yaml").read_text()), sort_keys=False).strip() if run else None
        )
    except (OSError, yaml.YAMLError):
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
