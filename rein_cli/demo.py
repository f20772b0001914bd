"""`rein demo`: the whole pipeline offline on CPU: generate scenes, train on clear, evaluate five conditions, plot."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rein_cli.config import Config, Precision, check_choice, load_config
from rein_cli.data.registry import SYNTHETIC_CONDITIONS, synthetic_name
from rein_cli.engine.charts import headroom, labelled_strip, missing, save_figure
from rein_cli.engine.gallery import GALLERY
from rein_cli.engine.html_report import HTML_FILE
from rein_cli.engine.imagestats import IMAGES_FILE
from rein_cli.engine.report import REPORT_FILE
from rein_cli.engine.results import RESULTS_FILE
from rein_cli.errors import ReinError
from rein_cli.io import check_folder, save_image, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rein_cli.engine.results import Evaluation
    from rein_cli.models.segmentor import Segmentor

log = logging.getLogger(__name__)

MARKER = "demo.json"
OUTPUTS = (
    "data",
    "run",
    "predictions",
    RESULTS_FILE,
    REPORT_FILE,
    HTML_FILE,
    "plots",
    GALLERY,
    IMAGES_FILE,
    "miou.png",
    MARKER,
)  # what a demo writes, and may replace


def check_out(out: Path) -> bool:
    """Whether ``out`` holds an earlier demo's output (to be replaced); an error for anything else but an empty
    or missing folder."""
    check_folder(out)
    if not out.exists():
        return False
    entries = list(out.iterdir())
    if entries and not (out / MARKER).is_file():
        raise ReinError(f"{out} is not empty and is not an earlier demo output; choose another --out")
    extra = next((e.name for e in entries if e.name not in OUTPUTS), None)
    if extra is not None:
        raise ReinError(f"{out} holds {extra}, which the demo did not write; move it or choose another --out")
    return bool(entries)


@contextlib.contextmanager
def fresh_output(out: Path) -> Iterator[None]:
    """An empty ``out`` for a new demo. An earlier demo there is set aside and deleted only when the new one is
    complete; if the new one fails or is interrupted, its partial output goes and the earlier one comes back. A
    demo killed outright leaves the earlier one at ``.<name>.previous``, which the next run puts back first."""
    previous = out.with_name(f".{out.name}.previous")
    if previous.is_dir():  # a killed run: the complete demo is the one set aside
        shutil.rmtree(out, ignore_errors=True)
        os.replace(previous, out)
    if check_out(out):
        os.replace(out, previous)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if previous.is_dir():
            os.replace(previous, out)
        raise ReinError(f"cannot create {out}: {err.strerror}; choose a writable --out") from err
    try:
        yield
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if previous.is_dir():
            os.replace(previous, out)
        raise
    shutil.rmtree(previous, ignore_errors=True)


DEFAULT_BACKBONE = "dinov2-s"  # pretrained, when its weights are cached or can be downloaded
PROBE_SECONDS = 5.0  # how long the demo tries to reach the Hub before falling back to the random vit-tiny


def demo_config(backbone: str | None, random_weights: bool, iters: int | None, device: str) -> tuple[Config, list[str]]:
    """The demo's configuration and what to say about its backbone.

    Without ``backbone``: pretrained DINOv2-S (recipe ``demo-dinov2-s``) when its weights are in the Hub cache or
    can be downloaded (the Hub answering within `PROBE_SECONDS`; no attempt when offline), else the random
    vit-tiny (recipe ``demo``). With ``backbone``: its pretrained weights, downloaded when needed; without them
    an error, unless ``random_weights``.
    """
    flags: dict[str, Any] = {"train.max_iters": iters, "train.device": device}
    if backbone is None:
        weights, reason = _pretrained(DEFAULT_BACKBONE)
        if weights is None:
            note = f"backbone: vit-tiny with RANDOM weights ({reason}); the numbers show that the pipeline works"
            return load_config("demo", **flags), [note]
        return load_config("demo-dinov2-s", **flags), [f"backbone: {DEFAULT_BACKBONE}, pretrained ({weights})"]
    weights, reason = _pretrained(backbone)
    if weights is None and not random_weights:
        raise ReinError(
            f"pretrained weights for {backbone} are not on disk ({reason}); fetch them with `rein pull {backbone}`, "
            "or add --random-weights to run without them"
        )
    recipe = "demo-dinov2-s" if backbone == DEFAULT_BACKBONE else "demo"
    flags.update({"model.backbone": backbone, "model.pretrained": weights is not None, "model.backbone_kwargs": {}})
    if weights is not None:
        note = f"backbone: {backbone}, pretrained ({weights})"
    else:
        note = f"backbone: {backbone} with RANDOM weights (--random-weights; {reason})"
    return load_config(recipe, **flags), [note]


def _pretrained(backbone: str) -> tuple[Path | None, str]:
    """A backbone's pretrained weights: from the Hub cache, else downloaded (after saying what, how big and under
    which licence) when the Hub answers within `PROBE_SECONDS`; or None and the reason."""
    from rein_cli.hub import TIMM_WEIGHTS_FILES, cached_weights, download_weights, file_size, offline
    from rein_cli.models.backbone import backbone_spec
    from rein_cli.zoo.backbones import BACKBONE_LICENCES

    repo = backbone_spec(backbone).hub_repo
    cached = cached_weights(repo)
    if cached is not None:
        return cached, ""
    if offline():
        return None, f"offline, and {repo} is not in the Hugging Face cache"
    found = ((name, size) for name in TIMM_WEIGHTS_FILES if (size := file_size(repo, name, timeout=PROBE_SECONDS)))
    filename, size = next(found, (None, None))
    if filename is None:
        return None, f"{repo} is not cached and the Hugging Face Hub did not answer within {PROBE_SECONDS:g} s"
    licence = BACKBONE_LICENCES.get(backbone, "see the Hub repo")
    log.info("downloading %s: %s/%s (%.0f MB, licence %s)", backbone, repo, filename, size / 1e6, licence)
    return download_weights(repo, filename=filename), ""


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What a demo made: its evaluation (results.json), what to say about its backbone, its time, its folder."""

    evaluation: Evaluation
    notes: list[str]
    seconds: float
    out: Path


def run_demo(
    out: Path,
    *,
    backbone: str | None = None,
    random_weights: bool = False,
    iters: int | None = None,
    device: str = "auto",
    num_train: int = 300,
    num_val: int = 40,
    precision: str | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``out``; returns its evaluation, notes and time. ``precision``: the evaluation's and the
    overlays' (auto, bf16 or fp32; default: the recipe's ``eval.precision``); training keeps the recipe's own."""
    from rein_cli.data.synthetic import generate_synthetic
    from rein_cli.engine.checkpoint import load_segmentor
    from rein_cli.engine.evaluate import evaluate
    from rein_cli.engine.runs import RunDir, resolve_device
    from rein_cli.engine.train import train

    out = Path(out)
    cfg, notes = demo_config(backbone, random_weights, iters, device)  # names, weights and the device: before writing
    precision = check_choice("precision", precision or cfg.eval.precision, Precision)
    resolve_device(device)
    check_out(out)
    start = time.perf_counter()
    for note in notes:
        log.info(note)
    with fresh_output(out):
        write_json(out / MARKER, {"complete": False})  # marks the folder as the demo's while it is being written
        data = out / "data"
        generate_synthetic(data, num_train=num_train, num_val=num_val, progress=progress)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data)))
        run = RunDir(train(cfg, out / "run", progress=progress, evaluate_after=False))
        model = load_segmentor(run.checkpoint(), device)  # evaluate what was saved
        names = [synthetic_name(c) for c in SYNTHETIC_CONDITIONS]
        # trained on clear weather: the DG mean is over the four other conditions, as Cityscapes -> ACDC is
        results = evaluate(
            model,
            names,
            out=out,
            data_dir=data,
            mode=cfg.eval.mode,
            progress=progress,
            trained_on=cfg.data.train,
            precision=precision,
            estimate=True,  # each condition also estimated without its labels, calibrated on clear weather
        )
        plot_miou(results, out / "miou.png")
        write_overlays(model, data, out / "predictions", precision=precision)
        seconds = time.perf_counter() - start
        marker = {"complete": True, "seconds": round(seconds, 1), "notes": notes, "config": cfg.to_dict()}
        write_json(out / MARKER, marker)
    return DemoResult(results, notes, seconds, out)


def plot_miou(results: Evaluation, path: Path) -> Path:
    """`miou_chart` as a PNG at ``path``, written atomically."""
    return save_figure(miou_chart(results), path)


def miou_chart(results: Evaluation) -> Figure:
    """A bar of mIoU per condition with its value, the source condition (trained on) in its own colour, and the DG
    mean as a dashed line whose value the legend gives."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = list(results.datasets)
    values = [results.datasets[n].mIoU or 0.0 for n in names]
    labels = [n.removeprefix("synthetic-") if n != synthetic_name("clear") else "clear (source)" for n in names]
    colours = {True: "#4c72b0", False: "#dd8452"}  # source, target
    figure = Figure(figsize=(6.4, 4.0), dpi=120, layout="constrained")
    ax = figure.add_subplot()
    bars = ax.bar(labels, values, color=[colours[results.datasets[n].trained_on] for n in names])
    ax.bar_label(bars, fmt="%.1f", fontsize=9, padding=2)
    handles = [Patch(color=colours[True], label="source (trained on)"), Patch(color=colours[False], label="target")]
    if results.mean_of and not missing(results.mean_mIoU):
        ax.axhline(results.mean_mIoU, color="#555555", linestyle="--", linewidth=1)
        mean = f"DG mean {results.mean_mIoU:.2f} ({len(results.mean_of)} conditions)"
        handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1, label=mean))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, headroom([*values, results.mean_mIoU]))
    ax.set_title("Trained on clear synthetic scenes, tested on each condition", fontsize=10)
    return figure


def write_overlays(model: Segmentor, data: Path, out: Path, *, scenes: int = 3, precision: str = "auto") -> list[Path]:
    """For a few validation scenes: one row per condition of image | prediction | ground truth, the columns and
    rows labelled, and under them a legend of the classes in the predictions and labels shown; the predictions in
    ``precision`` (as the evaluation's)."""
    from rein_cli.data.dataset import SegmentationDataset
    from rein_cli.data.transforms import EvalTransform
    from rein_cli.engine.inference import infer
    from rein_cli.engine.precision import inference_precision
    from rein_cli.labels import IGNORE_INDEX, colorize
    from rein_cli.models.segmentor import model_device

    transform = EvalTransform(model.mean, model.std)
    sets = [SegmentationDataset(data / synthetic_name(c), "val") for c in SYNTHETIC_CONDITIONS]
    conditions = [f"{c} (source)" if c == "clear" else c for c in SYNTHETIC_CONDITIONS]
    autocast = inference_precision(precision, model_device(model)).dtype
    written = []
    for index in range(min(scenes, len(sets[0]))):
        rows, present = [], set()
        for dataset in sets:
            item = dataset[index]
            rgb, label = item["image"].numpy(), item["label"].numpy()
            image, _ = transform(item["image"], None)
            image = image[None].to(model_device(model))
            scores = infer(model, image, mode="whole", crop=model.crop_size, autocast=autocast)
            pred = scores.argmax(1)[0].cpu().numpy().astype(np.uint8)
            rows.append([rgb, colorize(pred, model.palette), colorize(label, model.palette)])
            present.update(int(k) for k in np.unique(np.concatenate([pred.ravel(), label.ravel()])))
        legend = [(model.classes[k], model.palette[k]) for k in sorted(present - {IGNORE_INDEX})]
        strip = labelled_strip(
            rows, row_labels=conditions, column_labels=("image", "prediction", "ground truth"), legend=legend
        )
        path = out / f"scene_{index:02d}.jpg"
        save_image(path, strip)
        written.append(path)
    return written
