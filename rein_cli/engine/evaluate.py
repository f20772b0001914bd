"""Evaluation, the one of any model on any targets: targets resolved once, everything missing said in one message
before anything is computed, confusion matrices on the device (sharded over processes), the typed results.

The protocol is the official one (docs/evaluation.md): each dataset resized by its own test protocol, slide or whole
inference, the confusion matrix summed over all images at the label's resolution, NaN classes left out, and the
mean the plain average of the per-dataset mIoUs rounded to two decimals over the datasets the model was not
trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rein_cli.config import DataConfig, InferenceMode, Precision, PredictionIds, check_choice, data_root
from rein_cli.data.catalog import Located
from rein_cli.data.corruptions import parse_spec
from rein_cli.data.corruptions import prepare as prepare_corruptions
from rein_cli.data.manifest import Manifest
from rein_cli.data.prepare import ensure_prepared
from rein_cli.engine import distributed
from rein_cli.engine.analysis import WORST, add_estimates, write_analysis
from rein_cli.engine.bootstrap import RESAMPLES
from rein_cli.engine.checkpoint import checkpoint_dir, load_segmentor
from rein_cli.engine.compile import compile_for
from rein_cli.engine.html_report import write_html
from rein_cli.engine.inference import check_stride, check_window_batch
from rein_cli.engine.precision import inference_precision
from rein_cli.engine.report import write_report
from rein_cli.engine.results import (
    RESULTS_FILE,
    Corruption,
    EvaluatedModel,
    Evaluation,
    ModelInfo,
    read_results,
    write_results_file,
)
from rein_cli.engine.runs import resolve_device
from rein_cli.engine.scoring import check_classes, cpu_estimate, score_datasets
from rein_cli.engine.sources import (
    Given,
    ModelSource,
    as_the_run_did,
    assign,
    check_split,
    checkpoint_facts,
    preflight,
    resolve_targets,
    source_facts,
    sources_of,
)
from rein_cli.engine.summary import add_intervals, add_mean, corruption_summary
from rein_cli.errors import ReinError
from rein_cli.io import check_writable
from rein_cli.models.segmentor import count_parameters, model_device

log = logging.getLogger(__name__)

CALIBRATION_SPLIT = "val"  # where a calibration dataset's labels are


def evaluate(
    model: nn.Module | str | Path | ModelSource | Sequence[ModelSource],
    datasets: Sequence[str | Path | Located | Manifest],
    *,
    out: Path | None = None,
    data_dir: Path | None = None,
    split: str = "val",
    mode: InferenceMode | None = None,
    stride: int | None = None,
    flip: bool | None = None,
    compile: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    trained_on: Sequence[str] = (),
    reported: Mapping[str, Any] | None = None,
    save_predictions: Path | None = None,
    prediction_ids: PredictionIds = "label-ids",
    workers: int | None = None,
    corruption: str | None = None,
    estimate: bool = False,
    calibrate_on: str | Path | None = None,
    reference: Path | None = None,
    resamples: int = RESAMPLES,
    worst: int = WORST,
    window_batch: int | None = None,
    precision: str | None = None,
) -> Evaluation:
    """mIoU of ``model`` on each dataset's ``split``: `rein eval` and `rein_cli.evaluate`.

    ``model``: a segmentor, a checkpoint folder, ``hf://org/name[@revision]``, or the sources a name resolves to
    (`rein_cli.zoo.resolve.model_sources`: a backbone's releases). ``datasets``: names, aliases or prepared folders
    (comma lists too), found under ``data_dir`` (default ``$REIN_HOME/datasets``). Everything missing is listed in one
    error before anything is downloaded or computed.
    Writes ``out/results.json``, ``out/report.md`` and per dataset an IoU bar chart and a confusion-matrix heat map
    (rank 0 only). ``trained_on``: the model's training datasets, which never enter the domain-generalisation mean
    (default for a checkpoint: its config.json's); ``reported``: published figures ``{dataset: [{mIoU, split,
    source}]}`` shown beside ours (default for a checkpoint: its config.json's). Under torchrun each process
    evaluates images rank, rank + world, ... and the confusion matrices are summed. ``save_predictions``: write each
    image's prediction as a PNG (``prediction_ids``: Cityscapes label ids, what the benchmark servers read, or
    train ids) under ``DIR/<dataset>/``, mirroring the images' paths; a split without labels is then allowed (no
    metrics for it). ``workers``: data-loading processes (default: 0 on the CPU, up to 4 on a GPU). ``corruption``:
    a spec (`rein_cli.data.corruptions.parse_spec`: ``all``, ``fog``, ``fog:3``, comma lists): each dataset is
    evaluated once per (corruption, severity), the entries keyed ``<dataset>/<corruption>-<severity>``, summed up
    in ``corruption`` (docs/evaluation.md). ``estimate``: estimate each target's pixel accuracy and mIoU without its
    labels (unlabeled splits and plain folders of images allowed), calibrated on the labeled ``calibrate_on``
    (default: the model's first training dataset), which is evaluated too (docs/analysis.md). ``reference``: a
    results.json (or the folder holding one) whose training dataset the shift report (``out/report.html``) compares
    the targets with when none of them is the model's own. ``resamples``: the bootstrap resamples of each interval
    (0: no intervals); ``worst``: the worst images drawn per dataset for the shift report (with ``out``).
    ``window_batch``: the most windows per model call (None: automatic, `rein_cli.engine.inference.auto_window_batch`);
    any gives the same scores.
    ``precision``: auto, bf16 or fp32 (`rein_cli.engine.precision`); what ran is logged and recorded.
    ``mode``, ``stride``, ``flip``, ``precision``, ``window_batch`` and ``datasets`` left unset: as the training run
    of the checkpoint evaluated evaluates (`rein_cli.engine.sources.as_the_run_did`), else the defaults.
    ``compile``: torch.compile the model for this evaluation (`rein_cli.engine.compile`; the same scores).
    """
    sources = sources_of(model, trained_on, reported)
    given = Given(mode, stride, flip, precision, window_batch, datasets, data_dir)
    given = as_the_run_did(sources, given)
    mode, stride, flip, datasets, data_dir = given.mode, given.stride, given.flip, given.datasets, given.data_dir
    mode, flip = check_choice("mode", mode or "slide", InferenceMode), bool(flip)
    precision, window_batch = given.precision or "auto", given.window_batch
    check_window_batch(window_batch)
    pairs: list[tuple[str, int] | None] = list(parse_spec(corruption)) if corruption is not None else [None]
    baseline = read_reference(reference) if reference is not None else None
    check_choice("prediction_ids", prediction_ids, PredictionIds)
    check_choice("precision", precision, Precision)
    data_dir = Path(data_dir) if data_dir is not None else data_root(DataConfig())
    calibration = _calibration(sources, calibrate_on, data_dir) if estimate else None
    if calibrate_on is not None and not estimate:
        raise ReinError("--calibrate-on calibrates the label-free estimates: add --estimate")
    if estimate and corruption is not None:
        raise ReinError("--estimate estimates clean targets; evaluate the corruptions apart (without --estimate)")
    apart = calibration is not None and split != CALIBRATION_SPLIT  # the calibration's labels are in its val split
    extra = [calibration] if calibration is not None and not apart else []
    targets = resolve_targets([*datasets, *extra], data_dir, images=split)
    shares = assign(sources, targets)
    preflight(shares, data_dir)
    target_device = resolve_device(device)
    started = False
    if distributed.launched() and not distributed.is_initialized():  # torchrun: each process evaluates a share
        if target_device.type == "cuda":
            target_device = torch.device("cuda", distributed.local_rank())
        started = distributed.init_from_env(target_device)
    try:
        settings = dict(split=split, mode=mode, stride=stride, flip=flip, progress=progress, pairs=pairs)
        settings |= dict(save_predictions=save_predictions, prediction_ids=prediction_ids, workers=workers)
        settings |= dict(corruption=corruption, out=out, keep_worst=worst if out is not None else 0)
        settings |= dict(resamples=resamples, window_batch=window_batch, precision=precision)
        settings |= dict(compile=compile)
        settings |= dict(unlabeled=save_predictions is not None or estimate)
        results = _evaluate_shares(shares, data_dir, target_device, settings)
        if calibration is not None:
            key = _calibrate_apart(results, sources, calibration, data_dir, target_device, settings) if apart else None
            add_estimates(results, key or _key_of(results, calibration))
        if out is not None and distributed.is_main():
            write_results(results, Path(out), baseline)
    finally:
        if started:
            distributed.shutdown()
    return results


def _evaluate_shares(
    shares: list[tuple[ModelSource, list[Located | Manifest]]],
    data_dir: Path,
    target_device: torch.device,
    settings: dict[str, Any],
) -> Evaluation:
    """Every source on its share of the targets (prepared by the first process, the others waiting), merged, with
    the DG mean and the intervals."""
    split, out, save_predictions = settings["split"], settings["out"], settings["save_predictions"]
    manifests: dict[int, tuple[Manifest, bool]] = {}  # id(target) -> its manifest, and whether the split has labels
    main = distributed.is_main()
    if not main:
        distributed.barrier()  # the first process prepares the data and the corruptions' files first
    for _, share in shares:
        for target in share:
            prepare = isinstance(target, Located)
            manifest = ensure_prepared(target, data_dir, progress=main and settings["progress"]) if prepare else target
            manifests[id(target)] = manifest, check_split(manifest, split, settings["unlabeled"])
    if settings["corruption"] is not None:  # OpenCV there, frost's overlays downloaded once
        prepare_corruptions(settings["pairs"], progress=main and settings["progress"])
    if out is not None and main:
        check_writable(Path(out))
    if save_predictions is not None and main:
        check_writable(Path(save_predictions), "--save-predictions")
    if main:
        distributed.barrier()
    parts = []
    for source, share in shares:
        part = _evaluate_source(source, [manifests[id(t)] for t in share], target_device, settings)
        parts.append((source, [t.given if isinstance(t, Located) else t.dataset for t in share], part))
    results = _merge(parts, named=not (len(shares) == 1 and shares[0][0].model is not None))
    add_mean(results)
    add_intervals(results, settings["resamples"])
    distributed.barrier()  # every process's predictions are written before rank 0 reports
    return results


def _calibration(sources: list[ModelSource], calibrate_on: str | Path | None, data_dir: Path) -> Located | Manifest:
    """The labeled dataset the estimates are calibrated on: ``calibrate_on``, else the model's first training
    dataset; one model only."""
    if len(sources) != 1:
        raise ReinError(
            f"--estimate calibrates one model, and {len(sources)} share these targets; evaluate each model's "
            "targets apart (name a checkpoint or hf:// model)"
        )
    if calibrate_on is None:
        source = sources[0]
        trained = source.trained_on
        if trained is None and source.checkpoint is not None and Path(str(source.checkpoint)).is_dir():
            trained = checkpoint_facts(checkpoint_dir(source.checkpoint)[0])[0]
        if not trained:
            raise ReinError(
                f"{source.name} names no training dataset to calibrate the estimates on; name a labeled dataset "
                "of the model's classes with --calibrate-on NAME (e.g. its training dataset)"
            )
        calibrate_on = trained[0]
    found = resolve_targets([calibrate_on], data_dir, images="")[0]
    if isinstance(found, Manifest):  # a plain folder of images
        raise ReinError(
            f"cannot calibrate the estimates on {found.dataset}: {calibrate_on} is a folder of images without "
            "labels; name a labeled dataset with --calibrate-on NAME"
        )
    return found


def _calibrate_apart(
    results: Evaluation,
    sources: list[ModelSource],
    calibration: Located | Manifest,
    data_dir: Path,
    device: torch.device,
    settings: dict[str, Any],
) -> str:
    """The calibration dataset's `CALIBRATION_SPLIT` evaluated apart (the targets are on another split) and added to
    ``results`` as ``<dataset> (val)``; its key."""
    split = CALIBRATION_SPLIT
    apart = _evaluate_shares(
        assign(sources, [calibration]), data_dir, device, settings | {"split": split, "unlabeled": False}
    )
    ((name, entry),) = apart.datasets.items()
    key = f"{name} ({split})"
    results.datasets[key] = entry
    results.image_stats[key], results.manifests[key] = apart.image_stats[name], apart.manifests[name]
    return key


def _key_of(results: Evaluation, target: Located | Manifest) -> str:
    """The key of ``target``'s clean entry in ``results``."""
    path = (target.path if isinstance(target, Manifest) else target.manifest).resolve()
    return next(k for k, m in results.manifests.items() if m.path.resolve() == path and "/" not in k)


def write_results(results: Evaluation, out: Path, reference: Evaluation | None = None) -> None:
    """images.npz, the worst images' pictures, results.json, report.md, the per-dataset charts and the shift report
    report.html (against ``reference``'s training dataset when ``results`` has none), each written atomically."""
    write_analysis(results, out)
    write_results_file(results, out)
    write_report(results, out)
    write_html(results, out, reference)


def read_reference(reference: Path) -> Evaluation:
    """The evaluation ``--reference`` names: a results.json, or a `rein eval` folder holding one."""
    path = Path(reference)
    if path.is_dir():
        path = path / RESULTS_FILE
        if not path.is_file():
            raise ReinError(f"--reference {reference} is a folder without {RESULTS_FILE}; give a `rein eval` output")
    return read_results(path)


def _evaluate_source(
    source: ModelSource, manifests: list[tuple[Manifest, bool]], device: torch.device, settings: dict[str, Any]
) -> Evaluation:
    """One model on its share of the targets."""
    model, folder = source.model, None
    if model is None:
        if source.fetch is not None:
            source.fetch(settings["progress"])
        folder, _ = checkpoint_dir(source.checkpoint)
        model = load_segmentor(source.checkpoint, device)
    trained_on, reported = source_facts(source, folder)
    crop = model.crop_size
    stride = check_stride(settings["stride"], crop)
    for manifest, _ in manifests:
        check_classes(model, manifest)
    was_training = model.training
    model.eval()
    chosen = inference_precision(settings["precision"], model_device(model))
    (log.warning if chosen.warn else log.info)("%s", chosen)
    if source.model is None:  # every check done: what it will take
        log.info("model: %s (%s) on %s", source.name, source.why, ", ".join(m.dataset for m, _ in manifests))
        if model_device(model).type == "cpu":
            given = {k: settings[k] for k in ("split", "mode", "flip", "pairs", "window_batch")}
            log.info(cpu_estimate(model, manifests, stride=stride, autocast=chosen.dtype, **given))
    undo = compile_for(model, model_device(model), settings["compile"])
    datasets, stats = score_datasets(
        model,
        manifests,
        split=settings["split"],
        mode=settings["mode"],
        stride=stride,
        flip=settings["flip"],
        progress=settings["progress"],
        pairs=settings["pairs"],
        trained_on=trained_on,
        reported=reported,
        save_predictions=settings["save_predictions"],
        prediction_ids=settings["prediction_ids"],
        workers=settings["workers"],
        keep_worst=settings["keep_worst"],
        window_batch=settings["window_batch"],
        autocast=chosen.dtype,
    )
    model.train(was_training)
    undo()  # an in-memory model (training's) goes on as it came
    corruption = settings["corruption"]
    by_name = {manifest.dataset: manifest for manifest, _ in manifests}
    return Evaluation(
        split=settings["split"],
        mode=settings["mode"],
        crop=crop,
        stride=stride if settings["mode"] == "slide" else None,
        flip=settings["flip"],
        precision=chosen.name,
        method=model.config.method,
        backbone=model.config.backbone,
        trainable_parameters=count_parameters(model, True),
        trained_on=trained_on,
        model=ModelInfo(model.config.backbone, model.config.backbone_revision, dict(model.provenance)),
        datasets=datasets,
        corruption=corruption_summary(datasets, corruption, reported) if corruption is not None else None,
        assumed=list(source.assumed),
        image_stats=stats,
        manifests={key: by_name[entry.dataset or key] for key, entry in datasets.items()},
    )


def _merge(parts: list[tuple[ModelSource, list[str], Evaluation]], *, named: bool) -> Evaluation:
    """One evaluation of several models' parts: the setting and model of the last, every dataset (marked with its
    model's name when the models are named), the training datasets and corruption summaries of all."""
    last = parts[-1][2]
    results = replace(last, datasets={}, trained_on=[], models=[] if named else None, image_stats={}, manifests={})
    results.assumed = []
    if last.corruption is not None:
        results.corruption = Corruption(last.corruption.spec, {})
    for source, given, part in parts:
        for key, entry in part.datasets.items():
            results.datasets[key] = replace(entry, model=source.name) if named else entry
        results.image_stats.update(part.image_stats)
        results.manifests.update(part.manifests)
        results.trained_on = list(dict.fromkeys([*results.trained_on, *part.trained_on]))
        results.assumed = list(dict.fromkeys([*results.assumed, *part.assumed]))
        if part.corruption is not None:
            results.corruption.datasets.update(part.corruption.datasets)
        if named:
            trained = tuple(part.trained_on)
            info = EvaluatedModel(
                source.name, part.model, part.method, part.trainable_parameters, trained, part.crop, tuple(given)
            )
            results.models.append(info)
    return results
