"""What an evaluation runs on, known before anything is loaded: the models (`ModelSource`, a checkpoint's training
datasets and published figures) and the targets, each located once and checked, with everything missing said in
one message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from rein_cli.config import load_config
from rein_cli.data.catalog import Located, locate, prepare_command, root_option
from rein_cli.data.manifest import MANIFEST, Manifest, image_folder
from rein_cli.data.registry import canonical_list
from rein_cli.engine.checkpoint import checkpoint_missing, read_checkpoint_config
from rein_cli.engine.runs import RunDir
from rein_cli.errors import ReinError
from rein_cli.hub import offline, parse_hf_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """A model to evaluate, as known before it is loaded.

    ``name``: how the results name it (a checkpoint folder, ``hf://org/name``, a released adapter); ``checkpoint``:
    its folder or ``hf://`` address, or ``model`` an already built segmentor; ``trained_on`` and ``reported``: its
    training datasets and published figures (None: what the checkpoint's config.json says); ``only``: the registry
    datasets (and their parts) it evaluates when several models share the targets (None: the rest); ``missing``:
    what must be got before anything can start, each a line saying how; ``pending``: how to get what ``fetch``
    downloads before it is loaded (missing only when the network is off, or something else is missing anyway);
    ``assumed``: the settings of a released model that its files do not give and rein assumed."""

    name: str
    checkpoint: str | Path | None = None
    model: nn.Module | None = None
    why: str = "the checkpoint given"
    trained_on: Sequence[str] | None = None
    reported: Mapping[str, Any] | None = None
    only: tuple[str, ...] | None = None
    missing: tuple[str, ...] = ()
    pending: str | None = None
    fetch: Callable[[bool], Any] | None = None  # progress -> None; makes ``checkpoint`` ready
    assumed: tuple[str, ...] = ()  # a release's settings that rein assumed, one line each (shown beside the result)


def checkpoint_source(checkpoint: str | Path, **fields: Any) -> ModelSource:
    """A checkpoint folder (checked now: a folder that is no checkpoint is an error) or ``hf://`` repo as a source;
    a folder whose pretrained backbone is not on disk while offline is missing."""
    missing = () if parse_hf_uri(str(checkpoint)) else tuple(checkpoint_missing(Path(checkpoint)))
    return ModelSource(str(checkpoint), checkpoint=checkpoint, missing=missing, **fields)


@dataclass(frozen=True)
class Given:
    """What an evaluation was given that the training run of the checkpoint it evaluates can fill in: None (no
    datasets) where not given."""

    mode: str | None = None
    stride: int | None = None
    flip: bool | None = None
    precision: str | None = None
    window_batch: int | None = None
    datasets: Sequence[Any] = ()
    data_dir: Path | None = None


def as_the_run_did(sources: Sequence[ModelSource], given: Given) -> Given:
    """``given`` with what it leaves unset taken from the training run whose checkpoint it evaluates, as that run
    evaluated (its config.yaml: ``eval.mode``, ``eval.stride``, ``eval.flip``, and ``eval.precision`` and
    ``eval.window_batch`` where the run set them; without datasets its ``data.eval``, and then its ``data.root``
    where it set one that is there), said in one line; everything else as given (datasets named here are found
    under ``data_dir`` or the default folder)."""
    checkpoint = sources[0].checkpoint if len(sources) == 1 else None
    if checkpoint is None or parse_hf_uri(str(checkpoint)) or not Path(checkpoint).is_dir():
        return given
    run = RunDir.of_checkpoint(checkpoint)
    if run is None:
        return given
    try:
        cfg = load_config(str(run.config))
    except ReinError as err:  # the checkpoint describes itself: the run's settings are only defaults
        log.warning("not evaluating as the run %s does: %s; the defaults instead", run.path, err)
        return given
    taken: dict[str, Any] = {}
    if given.mode is None:
        taken["mode"] = cfg.eval.mode
    mode = taken.get("mode", given.mode)
    if given.stride is None and cfg.eval.stride is not None and mode == "slide":
        taken["stride"] = cfg.eval.stride
    if given.flip is None:
        taken["flip"] = cfg.eval.flip
    if given.precision is None and cfg.eval.precision != "auto":
        taken["precision"] = cfg.eval.precision
    if given.window_batch is None and cfg.eval.window_batch is not None:
        taken["window_batch"] = cfg.eval.window_batch
    if not given.datasets and cfg.data.eval:  # the run's targets, where the run found them
        taken["datasets"] = list(cfg.data.eval)
        if given.data_dir is None and cfg.data.root and Path(cfg.data.root).is_dir():
            taken["data_dir"] = Path(cfg.data.root)
    if taken:
        log.info(
            "evaluating %s as its run evaluates (%s): %s; give another value to change one",
            checkpoint,
            run.config,
            " ".join(filter(None, (_option(key, value) for key, value in taken.items()))),
        )
    return replace(given, **taken)


def _option(key: str, value: Any) -> str:
    """A setting as the `rein eval` option that gives it."""
    if key == "flip":
        return "--flip" if value else "--no-flip"
    if key == "datasets":
        return f"--target {','.join(value)}"
    if key == "data_dir":
        return root_option(value).strip()
    return f"--{key.replace('_', '-')} {value}"


def resolve_targets(
    targets: Sequence[str | Path | Located | Manifest], data_root: Path, *, images: str | None = None
) -> list[Located | Manifest]:
    """Target names, aliases and folders (repeatable and comma-separated: ``["bdd,citys", "map"]``) located once, in
    order, each once; located targets and manifests pass through. Unknown names fail here, with a "did you mean".
    ``images``: a split name under which a plain folder of images (no manifest) is taken as an unlabeled dataset."""
    resolved: list[Located | Manifest] = []
    for target in targets:
        if isinstance(target, Located | Manifest):
            resolved.append(target)
            continue
        for name in (t.strip() for t in str(target).split(",") if t.strip()):
            folder = Path(name)
            plain = images is not None and folder.is_dir() and not (folder / MANIFEST).is_file()
            resolved.append(image_folder(folder, images) if plain else locate(name, data_root))
    if not resolved:
        raise ReinError("no target to evaluate on; name one with --target, e.g. --target cityscapes")
    first: dict[Path, Located | Manifest] = {}  # one dataset named twice (cityscapes, citys) is evaluated once
    for target in resolved:
        first.setdefault((target.path if isinstance(target, Manifest) else target.manifest).resolve(), target)
    return list(first.values())


def assign(sources: Sequence[ModelSource], targets: Sequence[Located | Manifest]) -> list[tuple[ModelSource, list]]:
    """Each target to the first source that takes it (``only``); the sources that take none are dropped."""
    shares: list[tuple[ModelSource, list]] = [(source, []) for source in sources]
    for target in targets:
        located = target if isinstance(target, Located) else None
        for source, share in shares:
            if source.only is None or (located is not None and located.within(source.only)):
                share.append(target)
                break
        else:
            raise ReinError(f"no model evaluates {target}; name a model for every target")
    return [(source, share) for source, share in shares if share]


def preflight(shares: Sequence[tuple[ModelSource, list]], data_root: Path) -> None:
    """Everything missing (a model, its backbone's weights, a dataset not prepared under ``data_root``) in one error
    that says how to get each; nothing is downloaded or generated here. What a source would download counts as
    missing only when the network is off or something else is missing (otherwise it is downloaded)."""
    missing = [line for source, _ in shares for line in source.missing]
    where = root_option(data_root)
    for _, share in shares:
        for target in share:
            if (
                isinstance(target, Located)
                and not target.prepared
                and (target.spec is None or not target.spec.synthetic)
            ):
                command = prepare_command(target.name, target.manifest.parent.parent, "...")
                missing.append(
                    f"the dataset {target.name}: prepare it with `{command}` "
                    f"(`rein data info {target.name}{where}` says where to get it)"
                )
    pending = [source.pending for source, _ in shares if source.pending]
    if missing or (pending and offline()):
        raise ReinError("missing before evaluation can start: " + "; ".join(missing + pending) + "; then rerun")


def check_split(manifest: Manifest, split: str, predictions: bool) -> bool:
    """Whether ``split`` of ``manifest`` has labels; an error when it does not exist, or when it has none and no
    predictions are asked for."""
    if split not in manifest.splits:
        if split == "test":
            raise ReinError(
                f"dataset {manifest.dataset} ({manifest.path}) has no test split (its splits: "
                f"{', '.join(manifest.splits)}); `rein data prepare` keeps the test images of Cityscapes and ACDC when "
                "the archives hold them (prepare again with --overwrite after adding them)"
            )
        manifest.samples(split)  # raises: unknown split, with a "did you mean" and the splits there are
    samples = manifest.samples(split)
    unlabeled = sum(label is None for _, label in samples)
    if unlabeled and not predictions:
        raise ReinError(
            f"split {split} of {manifest.dataset} ({manifest.path}) has {unlabeled} of {len(samples)} images without "
            "a label; metrics need labels: evaluate a labeled split (e.g. --split val), estimate them without labels "
            "with --estimate, or write predictions for the benchmark server with --save-predictions DIR"
        )
    return unlabeled == 0


def sources_of(
    model: nn.Module | str | Path | ModelSource | Sequence[ModelSource],
    trained_on: Sequence[str],
    reported: Mapping[str, Any] | None,
) -> list[ModelSource]:
    facts = {"trained_on": trained_on or None, "reported": reported}
    if isinstance(model, nn.Module):
        return [ModelSource("the model given", model=model, trained_on=trained_on, reported=reported)]
    if isinstance(model, ModelSource):
        return [model]
    if isinstance(model, str | Path):
        return [checkpoint_source(model, **facts)]
    return list(model)


def checkpoint_facts(folder: Path) -> tuple[list[str], dict[str, Any]]:
    """What a checkpoint's config.json says about evaluation: its training datasets (canonical; the
    ``training_datasets`` list, or the ``trained_on`` string of older checkpoints) and the published figures of its
    recipe (``reported``)."""
    config = read_checkpoint_config(folder)
    trained = config.get("training_datasets") or config.get("trained_on")
    reported = config.get("reported")
    return canonical_list(trained), reported if isinstance(reported, dict) else {}


def source_facts(source: ModelSource, folder: Path | None) -> tuple[list[str], Mapping[str, Any]]:
    """A source's training datasets and published figures: its own, else its checkpoint's."""
    trained, reported = source.trained_on, source.reported
    if folder is not None and (trained is None or reported is None):
        from_checkpoint = checkpoint_facts(folder)
        trained = from_checkpoint[0] if trained is None else trained
        reported = from_checkpoint[1] if reported is None else reported
    return canonical_list(trained), reported or {}
