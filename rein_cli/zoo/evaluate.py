"""`rein eval` by name: a backbone's released adapter (or an adapter, a checkpoint folder, an ``hf://`` repo) on
named targets, checked before anything is downloaded or computed, with the published figures beside ours."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rein_cli.config import InferenceMode
from rein_cli.data.catalog import locate
from rein_cli.data.registry import lookup
from rein_cli.errors import ReinError
from rein_cli.io import check_image
from rein_cli.progress import duration
from rein_cli.zoo.pull import adapter_ready, backbone_file, checkpoint_path, find_release, pull_adapter
from rein_cli.zoo.releases import ACDC_RELEASE, DEFAULT_RELEASE, RELEASES, Release

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """One model and the targets it is evaluated on."""

    model: str  # a release name, a checkpoint folder or hf://org/name[@revision]
    targets: tuple[str, ...]
    why: str  # why this model, for the log

    @property
    def release(self) -> Release | None:
        return RELEASES.get(self.model)


def split_targets(values: list[str]) -> list[str]:
    """``["bdd,citys", "map"]`` -> ``["bdd", "citys", "map"]`` (repeatable and comma-separated, order kept)."""
    targets = [t.strip() for value in values for t in str(value).split(",") if t.strip()]
    if not targets:
        raise ReinError("no target to evaluate on; name one with --target, e.g. --target cityscapes")
    return list(dict.fromkeys(targets))


def plan(targets: list[str], *, checkpoint: str | None, adapter: str | None, backbone: str | None) -> list[Plan]:
    """Which model evaluates which targets: the one given, or a backbone's default release (the Cityscapes one
    for ACDC targets, where it has one)."""
    given = [x for x in (checkpoint, adapter, backbone) if x]
    if len(given) != 1:
        raise ReinError(
            "name the model once: a checkpoint (folder or hf://org/name), --adapter NAME or --backbone NAME"
        )
    if checkpoint:
        return [Plan(str(checkpoint), tuple(targets), "the checkpoint given")]
    if adapter:
        release = find_release(adapter)
        return [Plan(release.name, tuple(targets), "the adapter given")]
    if backbone not in DEFAULT_RELEASE:
        from rein_cli.models.backbone import backbone_spec

        backbone_spec(backbone)  # an unknown name: "did you mean"
        raise ReinError(
            f"there is no released Rein adapter for {backbone}; train one with `rein train --backbone {backbone} "
            f"--data gta5` and evaluate its checkpoint, or see `rein models`"
        )
    acdc = [t for t in targets if (spec := lookup(t)) is not None and (spec.parent or spec.name) == "acdc"]
    plans = []
    if backbone in ACDC_RELEASE and acdc:
        plans.append(Plan(ACDC_RELEASE[backbone], tuple(acdc), f"the Cityscapes release of {backbone}, for ACDC"))
    rest = [t for t in targets if t not in acdc or backbone not in ACDC_RELEASE]
    if rest:
        plans.append(Plan(DEFAULT_RELEASE[backbone], tuple(rest), f"the default release of {backbone}"))
    return plans


def preflight(plans: list[Plan], data_root: Path) -> list[str]:
    """Everything that is missing, as lines that say how to get it; nothing is downloaded or generated here.
    Releases that are not pulled yet count as missing when the Hub is offline, or when something else is missing
    (otherwise they are pulled)."""
    from rein_cli.hub import offline

    missing, to_pull = [], []
    for item in plans:
        release = item.release
        if release is not None:
            if release.unsupported:
                missing.append(f"{release.name} cannot be used: {release.unsupported}")
            elif not adapter_ready(release.name):
                to_pull.append(f"the adapter {release.name}: `rein pull {release.name}` (needs a connection)")
        elif not str(item.model).startswith("hf://"):
            missing += _checkpoint_missing(Path(item.model))
        for target in item.targets:
            found = locate(target, data_root)  # unknown names fail here, with a "did you mean"
            spec = found.spec
            if not found.prepared and (spec is None or spec.synthetic is None):
                name = spec.name if spec else target
                missing.append(
                    f"the dataset {name}: prepare it with `rein data prepare {name} --from ...` "
                    f"(`rein data info {name}` says where to get it)"
                )
    return missing + to_pull if missing or offline() else missing


def _checkpoint_missing(folder: Path) -> list[str]:
    from rein_cli.engine.checkpoint import read_checkpoint_config
    from rein_cli.hub import offline

    config = read_checkpoint_config(folder)  # not a checkpoint: a clear error now
    model = config["model"]
    if config.get("backbone_in_checkpoint") or not model.get("pretrained", True) or model.get("weights"):
        return []
    if backbone_file(model["backbone"], model.get("backbone_revision")) is None and offline():
        return [f"the weights of {model['backbone']}: run `rein pull {model['backbone']}` with a connection"]
    return []


def evaluate_named(
    targets: list[str],
    *,
    checkpoint: str | None = None,
    adapter: str | None = None,
    backbone: str | None = None,
    data_root: Path,
    out: Path | None = None,
    mode: InferenceMode = "slide",
    stride: int | None = None,
    flip: bool = False,
    split: str = "val",
    save_predictions: Path | None = None,
    prediction_ids: str = "label-ids",
    device: str = "auto",
    progress: bool = True,
    corruption: str | None = None,
) -> dict[str, Any]:
    """Evaluate on ``targets`` (names, aliases, prepared folders; comma-separated allowed) with the model named by
    exactly one of ``checkpoint``, ``adapter`` or ``backbone`` (its released adapter). Everything missing is listed
    in one error before any download; missing releases are then pulled. Writes ``out/results.json`` (with the
    model's provenance), ``out/report.md`` and the charts; the published figures (a released adapter's, or those
    a checkpoint's config.json carries) beside ours; the domain-generalisation mean leaves out the datasets each
    model was trained on. ``corruption``: evaluate on corrupted copies (`rein_cli.engine.evaluate.evaluate`)."""
    import torch

    from rein_cli.data.corruptions import parse_spec
    from rein_cli.engine import distributed
    from rein_cli.engine.evaluate import check_targets
    from rein_cli.engine.runs import resolve_device
    from rein_cli.io import check_writable

    targets = split_targets(targets)
    if corruption is not None:
        parse_spec(corruption)  # a bad spec before anything else
    plans = plan(targets, checkpoint=checkpoint, adapter=adapter, backbone=backbone)
    missing = preflight(plans, data_root)
    if missing:
        raise ReinError("missing before evaluation can start: " + "; ".join(missing) + "; then rerun")
    check_targets(targets, data_root, split, save_predictions is not None, progress=progress)  # splits and labels
    if out is not None and distributed.is_main():
        check_writable(Path(out))
    target_device = resolve_device(device)
    started = False
    if distributed.launched():  # torchrun: one process per device, each evaluates its share of the images
        if target_device.type == "cuda":
            target_device = torch.device("cuda", distributed.local_rank())
        started = not distributed.is_initialized() and distributed.init_from_env(target_device)
    try:
        return _evaluate_plans(
            plans,
            data_root=data_root,
            out=out,
            mode=mode,
            stride=stride,
            flip=flip,
            split=split,
            save_predictions=save_predictions,
            prediction_ids=prediction_ids,
            device=target_device,
            progress=progress,
            corruption=corruption,
        )
    finally:
        if started:
            distributed.shutdown()


def _evaluate_plans(
    plans: list[Plan],
    *,
    data_root: Path,
    out: Path | None,
    mode: InferenceMode,
    stride: int | None,
    flip: bool,
    split: str,
    save_predictions: Path | None,
    prediction_ids: str,
    device: Any,
    progress: bool,
    corruption: str | None = None,
) -> dict[str, Any]:
    from rein_cli.data.corruptions import parse_spec
    from rein_cli.engine import distributed
    from rein_cli.engine.checkpoint import load_segmentor
    from rein_cli.engine.evaluate import add_mean, checkpoint_facts, evaluate, training_datasets, write_results

    results: dict[str, Any] = {"datasets": {}, "models": []}
    for item in plans:
        log.info("model: %s (%s) on %s", item.model, item.why, ", ".join(item.targets))
        source = item.model
        if item.release is not None:
            if not adapter_ready(item.release.name):
                pull_adapter(item.release.name, progress=progress)
            source = checkpoint_path(item.release.name)
        model = load_segmentor(source, device)
        if item.release is not None:
            facts = {"trained_on": training_datasets(item.release.trained_on), "reported": _reported(item.release)}
        else:
            facts = checkpoint_facts(source)
        if next(model.parameters()).device.type == "cpu":
            copies = len(parse_spec(corruption)) if corruption is not None else 1  # each image once per pair
            log.info(_cpu_estimate(model, item.targets, data_root, mode, stride, split, copies))
        part = evaluate(
            model,
            list(item.targets),
            data_dir=data_root,
            split=split,
            mode=mode,
            stride=stride,
            flip=flip,
            progress=progress,
            trained_on=facts["trained_on"],
            reported=facts["reported"],
            save_predictions=save_predictions,
            prediction_ids=prediction_ids,
            corruption=corruption,
        )
        if "corruption" in part:
            merged = results.setdefault("corruption", {"spec": part["corruption"]["spec"], "datasets": {}})
            merged["datasets"].update(part["corruption"]["datasets"])
        for name, entry in part["datasets"].items():
            entry["model"] = item.model
            results["datasets"][name] = entry
        keys = ("method", "trainable_parameters", "trained_on")
        results["models"].append(
            {
                "name": item.model,
                **part["model"],
                **{k: part[k] for k in keys},
                "crop": part["crop"],
                "targets": item.targets,
            }
        )
        shared = ("schema", "split", "mode", "crop", "stride", "flip", "method", "backbone", "trainable_parameters")
        results.update({k: part[k] for k in shared})
        results["trained_on"] = list(dict.fromkeys([*results.get("trained_on", []), *part["trained_on"]]))
        results["model"] = part["model"]
    add_mean(results)
    if out is not None and distributed.is_main():
        write_results(results, Path(out))
    return results


def _reported(release: Release) -> dict[str, list[dict]]:
    """A release's published figures in the ``reported`` schema of recipes and checkpoints."""
    return {
        name: [{"mIoU": r.mIoU, "split": r.split, "source": r.source} for r in figures]
        for name, figures in release.reported.items()
    }


def format_comparison(results: dict[str, Any]) -> str:
    """Our mIoU beside the published figures, one line per target (empty when nothing was published)."""
    lines = []
    for name, entry in results["datasets"].items():
        for r in entry.get("reported", []):
            lines.append(
                f"  {name:<18} ours {entry['mIoU']:6.2f}   published {r['mIoU']:6.2f} ({r['split']}, {r['source']})"
            )
    return "\n".join(["ours vs published (mIoU):", *lines]) if lines else ""


def _cpu_estimate(
    model,
    targets: tuple[str, ...],
    data_root: Path,
    mode: str,
    stride: int | None,
    split: str = "val",
    copies: int = 1,
) -> str:
    """A rough time for the evaluation on this CPU: one timed forward pass (a crop-sized window, or in whole mode
    the first image's size), times the passes every target's images need (judged by each target's first image),
    times the ``copies`` of each image (a corruption evaluation's pairs; the corrupting itself not counted)."""
    import torch

    from rein_cli.data.prepare import ensure_prepared
    from rein_cli.data.transforms import keep_ratio_size
    from rein_cli.engine.inference import default_stride, slide_windows

    crop = model.crop_size
    passes, shape = 0, (crop, crop)
    for target in targets:
        manifest = ensure_prepared(target, data_root, progress=False)
        samples = manifest.samples(split)
        width, height = check_image(samples[0][0])
        spec = lookup(manifest.dataset)
        size = spec.test_size_for(crop) if spec else None
        if size is not None:
            height, width = keep_ratio_size(height, width, *size)
        if mode == "whole":
            passes, shape = passes + len(samples), (height, width)
        else:
            passes += len(slide_windows(height, width, crop, stride or default_stride(crop))) * len(samples)
    passes *= copies
    with torch.no_grad():
        start = time.perf_counter()
        model.semantic_scores(torch.zeros(1, 3, *shape))
        seconds = time.perf_counter() - start
    what = "images" if mode == "whole" else f"windows of {crop}x{crop}"
    return (
        f"on the CPU this takes about {duration(seconds * passes)} ({passes} {what}, {seconds:.1f} s each); "
        "a GPU is much faster (--device cuda)"
    )
