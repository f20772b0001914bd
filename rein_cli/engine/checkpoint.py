"""Checkpoints: a directory that is also a Hugging Face model repo (config.json, model.safetensors, README.md).

``model.safetensors`` holds the trained weights (Rein and head) and, when the backbone cannot be
re-created from the Hub (random initialisation), the backbone too. ``config.json`` holds everything
needed to rebuild the model. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rein_cli import __version__
from rein_cli.config import check_section, config_from_dict, to_dict
from rein_cli.documents import load_json
from rein_cli.engine.runs import resolve_device
from rein_cli.errors import ReinError, os_error
from rein_cli.io import umask, write_json
from rein_cli.models.methods import METHODS
from rein_cli.models.segmentor import Segmentor, build_segmentor, trainable_state_dict

if TYPE_CHECKING:
    from rein_cli.engine.results import Evaluation

FORMAT = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
HUB_LICENCES = ("apache-2.0", "mit", "cc-by-nc-4.0")  # licence ids the Hub's card metadata knows
TRAINING_STATE_FILE = "training_state.pt"  # in a run's step checkpoints: what resuming needs besides the weights


def save_checkpoint(
    model: Segmentor,
    path: Path,
    *,
    info: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint directory atomically (a temporary directory renamed into place).

    ``config.json`` gets the model's declared metadata (its config, classes, palette, normalisation) and
    ``info`` (e.g. ``trained_on``, ``iterations``). ``training_state`` (optimizer, step, random generators,
    data position) goes into ``training_state.pt`` inside the same temporary directory, so the directory
    holds both or does not exist."""
    from safetensors.torch import save_file

    model_config = model.config
    # the backbone is stored when it cannot be re-created from the Hub: random, fine-tuned or from a local file
    trained = METHODS[model_config.method].trains_backbone
    backbone_saved = not model_config.pretrained or trained or bool(model_config.weights)
    state = model.state_dict() if backbone_saved else trainable_state_dict(model)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    provenance = _stored_provenance(model.provenance)
    config = {
        "format": FORMAT,
        "rein_version": __version__,
        "model": to_dict(model_config),
        "backbone_in_checkpoint": backbone_saved,
        "classes": list(model.classes),
        "palette": [list(c) for c in model.palette],
        "normalization": {"mean": list(model.mean), "std": list(model.std)},
        **({"provenance": provenance} if provenance else {}),
        **(info or {}),
    }
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and (old / CONFIG_FILE).is_file():  # a save killed between its two renames: put it back
        os.replace(old, path)
    if path.exists() and not (path / CONFIG_FILE).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise ReinError(f"{path} exists and is not a rein checkpoint; choose a new or empty folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; a checkpoint is shared like any folder
    except OSError as err:
        raise ReinError(f"cannot write checkpoint {path}: {err.strerror}") from err
    try:
        try:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": str(FORMAT)})
        except Exception as err:  # safetensors (Rust) names the operating system's error only in its message
            code, _ = os_error(err)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(path / WEIGHTS_FILE)) from err
        os.chmod(tmp / WEIGHTS_FILE, 0o666 & ~umask())
        write_json(tmp / CONFIG_FILE, config)
        (tmp / CARD_FILE).write_text(model_card(config))
        if training_state is not None:
            try:
                with open(tmp / TRAINING_STATE_FILE, "wb") as file:  # through Python: a failed write keeps its errno
                    torch.save(training_state, file)
            except (OSError, RuntimeError) as err:  # torch's writer turns a failed write (a full disk) into this
                cause = err if isinstance(err, OSError) else err.__context__
                if isinstance(cause, OSError) and cause.errno is not None:
                    raise OSError(cause.errno, cause.strerror, str(path / TRAINING_STATE_FILE)) from err
                raise ReinError(
                    f"cannot write {path / TRAINING_STATE_FILE}: the write failed ({err}); the disk may be full: "
                    "free space there (`df -h`)"
                ) from err
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        if err.filename is None:  # a failed write of an open file names none: name the checkpoint
            err.filename = str(path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_training_state(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``training_state.pt`` of a step checkpoint (tensors only, nothing else unpickled)."""
    file = Path(path) / TRAINING_STATE_FILE
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ReinError(f"{path} has no {TRAINING_STATE_FILE}; it is not a step checkpoint of a run") from None
    except Exception as err:  # truncated or foreign file
        raise ReinError(f"cannot read {file}: {err}; resume from an earlier checkpoint or start a new run") from err
    if not isinstance(state, dict) or not {"step", "optimizer", "rng"} <= set(state):
        raise ReinError(f"{file} is not a rein training state; resume from an earlier checkpoint or start a new run")
    return state


def _stored_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps of its model's provenance: never the local path it was loaded from."""
    return {k: v for k, v in provenance.items() if k != "checkpoint"}


def checkpoint_dir(source: Path | str) -> tuple[Path, dict[str, Any]]:
    """A checkpoint given as a folder or as ``hf://org/name[@revision]`` -> its local folder and its provenance
    (the Hub repo and the exact commit for a Hub checkpoint)."""
    from rein_cli.hub import parse_hf_uri, revision_of, snapshot

    hub = parse_hf_uri(str(source))
    if hub is None:
        return Path(source), {"checkpoint": str(source)}
    repo, revision = hub
    folder = snapshot(repo, revision)
    commit = revision_of(folder / CONFIG_FILE) or revision
    return folder, {"checkpoint": str(source), "hub_repo": repo, "hub_revision": commit}


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    """A checkpoint's ``config.json``, checked against the schema (every problem names the file and the key)."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        old = path.with_name(f".{path.name}.old")
        if not path.exists() and (old / CONFIG_FILE).is_file():
            raise ReinError(
                f"{path} was being replaced when its command was killed; the complete previous checkpoint is "
                f"{old}: rename it to {path.name}"
            )
        raise ReinError(f"{path} is not a rein checkpoint (no {CONFIG_FILE}); give a checkpoint directory")
    try:
        config = load_json(file.read_text(encoding="utf-8"), str(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReinError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ReinError(f"{file} must hold a JSON object, not {type(config).__name__}; the checkpoint is damaged")
    if config.get("format") != FORMAT:
        raise ReinError(f"{path} has checkpoint format {config.get('format')!r}; this rein reads format {FORMAT}")
    try:
        _check_schema(config)
    except ReinError as err:
        raise ReinError(f"{file}: {err}; the checkpoint is damaged or was edited by hand") from err
    return config


def _check_schema(config: dict[str, Any]) -> None:
    """The keys loading relies on: a valid ``model`` section, classes and palette for every output, the
    normalisation, whether the backbone is inside."""
    if not isinstance(config.get("model"), dict):
        raise ReinError("'model' must be an object with the model's configuration")
    model = check_section(config_from_dict({"model": config["model"]}).model, "model.")
    classes, palette = config.get("classes"), config.get("palette")
    if (
        not isinstance(classes, list)
        or len(classes) != model.num_classes
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ReinError(f"'classes' must list {model.num_classes} class names (model.num_classes)")
    if not isinstance(palette, list) or len(palette) < model.num_classes or not all(_is_colour(c) for c in palette):
        raise ReinError(f"'palette' must give {model.num_classes} colours as [r, g, b] integers 0-255")
    normalization = config.get("normalization", {})
    for key in ("mean", "std"):
        values = normalization.get(key, [0.5, 0.5, 0.5]) if isinstance(normalization, dict) else None
        if not _is_triple(values) or (key == "std" and min(values) <= 0):
            raise ReinError(f"'normalization.{key}' must be three numbers" + (" > 0" if key == "std" else ""))
    if not isinstance(config.get("backbone_in_checkpoint", False), bool):
        raise ReinError("'backbone_in_checkpoint' must be true or false")


def _is_colour(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value)


def _is_triple(value: Any) -> bool:
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return numbers and len(value) == 3 and all(math.isfinite(v) for v in value)


def checkpoint_missing(folder: Path) -> list[str]:
    """What loading checkpoint ``folder`` would need that is not on disk while the Hub is offline (its pretrained
    backbone's weights), as lines saying how to get it; a folder that is not a checkpoint is an error now."""
    from rein_cli.hub import cached_weights, offline
    from rein_cli.models.backbone import backbone_spec
    from rein_cli.models.segmentor import pull_command

    config = read_checkpoint_config(folder)
    model = config["model"]
    if config.get("backbone_in_checkpoint") or not model.get("pretrained", True) or model.get("weights"):
        return []
    name, revision = model["backbone"], model.get("backbone_revision")
    if cached_weights(backbone_spec(name).hub_repo, revision=revision) is None and offline():
        return [f"the weights of {name}: run {pull_command(name, revision)} with a connection"]
    return []


def load_segmentor(path: Path | str, device: str | torch.device = "cpu", *, download: bool = True) -> Segmentor:
    """Rebuild a saved model in eval mode on ``device`` (``auto``, ``cpu``, ``cuda:N``), with the classes, palette,
    normalisation and model config of its ``config.json``. ``path``: a checkpoint folder or
    ``hf://org/name[@revision]`` (a rein checkpoint on the Hugging Face Hub)."""
    from safetensors.torch import load_file

    path, provenance = checkpoint_dir(path)
    config = read_checkpoint_config(path)
    device = resolve_device(device)
    in_file = bool(config.get("backbone_in_checkpoint"))
    normalization = config.get("normalization") or {}
    model = build_segmentor(
        config_from_dict({"model": config["model"]}).model,
        download=download,
        load_backbone=not in_file,  # with the backbone in the file, its weights replace the random initialisation
        classes=config.get("classes"),
        palette=config.get("palette"),
        mean=normalization.get("mean"),
        std=normalization.get("std"),
        provenance={**config.get("provenance", {}), **provenance},
    )
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except Exception as err:  # missing or corrupt file
        raise ReinError(f"cannot read {path / WEIGHTS_FILE}: {err}") from err
    broken = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise ReinError(
            f"{path / WEIGHTS_FILE} holds NaN or infinite weights ({', '.join(broken[:3])}); the run that saved "
            "it diverged or the file is damaged: use an earlier checkpoint"
        )
    expected = set(model.state_dict() if in_file else trainable_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ReinError(
            f"checkpoint {path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ReinError(f"checkpoint {path} has wrong shapes: {err}") from err
    return model.to(device).eval()


def init_from_checkpoint(model: Segmentor, source: Path | str) -> dict[str, Any]:
    """Start training from a checkpoint's weights (folder or ``hf://``): every trainable parameter of ``model``
    must be in it with the same shape; the backbone's weights are taken too when the checkpoint stores them.
    Returns the checkpoint's provenance."""
    from safetensors.torch import load_file

    folder, provenance = checkpoint_dir(source)
    read_checkpoint_config(folder)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:
        raise ReinError(f"cannot read {folder / WEIGHTS_FILE}: {err}") from err
    own = model.state_dict()
    wrong = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    missing = sorted(set(trainable_state_dict(model)) - set(state))
    if wrong or missing:
        raise ReinError(
            f"{source} does not fit this model (train.init_from): missing {missing[:4]}, wrong shapes {wrong[:4]}; "
            "use a checkpoint of the same backbone, method, head and number of classes"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return provenance


def model_card(
    config: dict[str, Any],
    *,
    repo_id: str | None = None,
    licence: str | None = None,
    results: Evaluation | None = None,
    recipe: str | None = None,
) -> str:
    """The model card of a checkpoint (its README.md): backbone, method, training data, provenance and how to use it;
    for a Hub repo (``repo_id``) with the backbone's ``licence`` and the training data's terms, the run's
    evaluation ``results`` and its resolved ``recipe`` (config.yaml's text)."""
    from rein_cli.data.registry import lookup
    from rein_cli.engine.report import fmt
    from rein_cli.models.backbone import backbone_spec

    model = config["model"]
    backbone = model["backbone"]
    trained_on = config.get("trained_on") or (config.get("provenance") or {}).get("adapter", "")
    revision = model.get("backbone_revision")
    trains = METHODS[model["method"]].trains_backbone
    weights = "weights included" if config.get("backbone_in_checkpoint") else "weights from the Hub"
    lines = ["---", "library_name: rein"]
    if licence is not None:
        spdx = licence.split(" ")[0]
        lines.append(f"license: {spdx if spdx in HUB_LICENCES else 'other'}")
    lines += [
        "tags: [semantic-segmentation, domain-generalization, rein]",
        "---",
        "",
        f"# Rein segmentor: {backbone} + {model['head']} head",
        "",
        f"- backbone: `{backbone}`, `{backbone_spec(backbone).hub_repo}`"
        + (f" at revision `{revision}`" if revision else "")
        + f", {weights} ({'fine-tuned' if trains else 'frozen'})",
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
    where = f"hf://{repo_id}" if repo_id else "PATH"
    lines += ["", "## Use", "", "```bash", f"rein eval {where} --target cityscapes"]
    lines += [f"rein predict {where} photos/ --out predictions", "```", "", "```python", "import rein_cli", ""]
    lines += [f'model = rein_cli.load_segmentor("{where}")', "```"]
    if results is not None:
        lines += ["", "## Results (mIoU, %)", "", "| dataset | mIoU | mAcc | aAcc | images |", "|---|---|---|---|---|"]
        for name, r in results.datasets.items():
            lines.append(f"| {name} | {fmt(r.mIoU)} | {fmt(r.mAcc)} | {fmt(r.aAcc)} | {r.images} |")
        lines.append(f"\nEvaluated with `{results.mode}` inference at crop {results.crop}.")
    if recipe:
        lines += ["", "## Recipe", "", "The resolved configuration of the training run:", "", "```yaml", recipe, "```"]
    if licence is not None:
        data = lookup(trained_on) if trained_on else None
        lines += ["", "## Licence", "", f"- The backbone's pretrained weights: {licence}."]
        if data is not None:
            lines.append(f"- The training data ({data.name}): {data.licence}.")
        lines.append("- The Rein and head weights are derived from both; use them within their terms.")
    return "\n".join(lines) + "\n"
