"""`rein push`: a checkpoint folder to a Hugging Face Hub model repo, with a model card that says what it is."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from rein_cli.documents import load_yaml
from rein_cli.engine.checkpoint import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, model_card, read_checkpoint_config
from rein_cli.engine.results import Evaluation, read_results
from rein_cli.engine.runs import RunDir
from rein_cli.errors import ReinError
from rein_cli.zoo.backbones import BACKBONE_LICENCES

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
    run = RunDir.of_checkpoint(folder)
    licence = BACKBONE_LICENCES.get(config["model"]["backbone"], "see its Hub repo")
    card = model_card(config, repo_id=repo_id, licence=licence, results=_results(run), recipe=_recipe(run))
    with tempfile.TemporaryDirectory(prefix="rein-push-") as tmp:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            _link_or_copy(folder / name, Path(tmp) / name)
        (Path(tmp) / CARD_FILE).write_text(card)
        return push_folder(Path(tmp), repo_id, private=private, message=f"Upload {folder.name} with rein")


def _results(run: RunDir | None) -> Evaluation | None:
    """The run's final evaluation, when it has a readable one."""
    if run is None or not run.results.is_file():
        return None
    try:
        return read_results(run.results)
    except ReinError:
        return None


def _recipe(run: RunDir | None) -> str | None:
    try:
        return (
            yaml.safe_dump(load_yaml(run.config.read_text(), str(run.config)), sort_keys=False).strip() if run else None
        )
    except (OSError, yaml.YAMLError):
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
