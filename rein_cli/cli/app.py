"""The `rein` command line: parses options, calls one library function per command, prints.

Heavy imports (torch, timm) happen inside the commands, so `rein --help` stays fast.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from rein_cli import __version__, config
from rein_cli.cli.data import data_app
from rein_cli.cli.failures import ReinGroup
from rein_cli.cli.options import (
    Compile,
    DataRoot,
    Device,
    Head,
    InferenceMode,
    Method,
    Options,
    Out,
    PrecisionOption,
    PredictionIds,
    Progress,
    Sets,
    WindowBatch,
    bars,
)
from rein_cli.cli.predict import compare, predict
from rein_cli.cli.zoo import convert, models, pull, push

log = logging.getLogger("rein_cli")


app = typer.Typer(
    name="rein",
    cls=ReinGroup,
    help="Domain-generalized semantic segmentation with frozen Vision Foundation Models and Rein.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rein {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Full tracebacks on errors, and debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and results.")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="No network: only what is cached (as HF_HUB_OFFLINE=1).")
    ] = False,
) -> None:
    argv = ctx.obj.argv if isinstance(ctx.obj, Options) else tuple(sys.argv[1:])
    ctx.obj = Options(debug=debug, argv=argv)
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("rein_cli").setLevel(logging.DEBUG if debug else logging.NOTSET)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Hub client logs every request at INFO
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the same, under its newer name
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry warnings; our errors say what failed
    if offline:
        _go_offline()


def _go_offline() -> None:
    """The Hub's own switch, for this process: huggingface_hub reads HF_HUB_OFFLINE once, at import."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


def run(argv: list[str] | None = None) -> None:
    """Console entry point. SIGTERM (``kill``, a job scheduler's stop) ends a command as Ctrl-C does: cleanly, with
    its one line and exit code 130."""
    try:
        previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    options = Options(argv=tuple(sys.argv[1:] if argv is None else argv))
    try:
        app(args=argv, prog_name="rein", obj=options)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _terminate(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: the command ends as interrupted. Its worker processes end with it, some by the same signal
    (a process group's): torch's check of its data-loader workers (its SIGCHLD handler) would report their end as a
    failure, in a traceback, up to the last moment of this process, so that check ends here (a handler that does
    nothing: with none, a SIGCHLD already pending would be reported as "ignored")."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, _ignore)
    raise KeyboardInterrupt


def _ignore(signum: int, frame: object) -> None:
    pass


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (new, empty, or an earlier demo's).")
    ] = Path("rein-demo"),
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Use this backbone's pretrained weights if on disk.")
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="With --backbone: fall back to random weights.")
    ] = False,
    iters: Annotated[int | None, typer.Option("--iters", min=0, help="Training iterations (recipe: 200).")] = None,
    device: Device = "auto",
    precision: PrecisionOption = None,
    progress: Progress = None,
) -> None:
    """Generate synthetic street scenes, train Rein on clear weather, evaluate on fog/night/rain/snow."""
    from rein_cli.demo import run_demo
    from rein_cli.engine.report import format_estimates, format_table

    shown = bars(progress)
    options = dict(random_weights=random_weights, iters=iters, device=device, precision=precision and precision.value)
    result = run_demo(out, backbone=backbone, progress=shown, **options)
    typer.echo(format_table(result.evaluation))
    typer.echo(format_estimates(result.evaluation))
    for note in result.notes:
        typer.echo(note)
    typer.echo(f"demo finished in {result.seconds:.0f} s; results, chart and overlays in {out}/")


@app.command()
def train(
    ctx: typer.Context,
    recipe: Annotated[str | None, typer.Argument(help="Recipe file or shipped recipe name (e.g. demo).")] = None,
    sets: Sets = None,
    backbone: Annotated[str | None, typer.Option("--backbone", help="Backbone name, e.g. dinov2-l.")] = None,
    method: Annotated[
        Method | None, typer.Option("--method", help="rein, or the baselines frozen / full / lora / adaptformer / vpt.")
    ] = None,
    head: Annotated[
        Head | None,
        typer.Option("--head", help="mask2former (the paper's), fpn (light) or semfpn (mmseg's Semantic FPN)."),
    ] = None,
    data: Annotated[str | None, typer.Option("--data", help="Training dataset name or prepared folder.")] = None,
    iters: Annotated[int | None, typer.Option("--iters", min=0, help="Training iterations.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    devices: Annotated[
        int | None,
        typer.Option("--devices", min=1, help="Processes (GPUs) on this machine: starts torchrun with N processes."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue a killed or finished run exactly, from its latest step checkpoint."),
    ] = None,
    out: Out = None,
    data_root: DataRoot = None,
    progress: Progress = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model (train.compile; compiles for minutes at first; a CPU needs g++).",
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the shipped recipes (setting, data, schedule, published figures).")
    ] = False,
) -> None:
    """Train a segmentor; writes a run directory with config, metrics, checkpoints and evaluation."""
    from rein_cli.engine import distributed

    if list_:
        typer.echo(config.format_recipes())
        return
    from rein_cli.engine.runs import RunDir
    from rein_cli.engine.train import train as train_

    flags = {
        "model.backbone": backbone,
        "model.method": method and method.value,
        "model.head": head and head.value,
        "data.train": data,
        "train.max_iters": iters,
        "data.batch_size": batch_size,
        "train.device": device,
        "train.compile": compile_,
        "data.root": str(data_root.absolute()) if data_root is not None else None,  # as --set data.root=DIR
    }
    name = config.recipe_name(recipe)  # recorded in the checkpoints (a resumed run keeps its own)
    if resume is not None and recipe is None:  # the run's own settings, with the options given now on top
        recipe = str(RunDir(resume).check("--resume").config)
    cfg = config.load_config(recipe, sets, **flags)
    if devices is not None and devices > 1 and not distributed.under_torchrun():  # N processes, checked first
        from rein_cli.engine.launch import check_launch, launch_training

        folder = check_launch(cfg, devices, out=out, resume=resume, progress=bars(progress))
        raise typer.Exit(launch_training(ctx.obj.argv, devices, folder, cfg.train.max_iters))
    run = RunDir(train_(cfg, out, progress=bars(progress), resume=resume, recipe=name))
    if distributed.launch_rank() == 0:  # under torchrun, one process answers
        if cfg.data.eval and run.results.is_file():  # the evaluation after training, as `rein eval` shows it
            from rein_cli.engine.report import REPORT_FILE, format_table
            from rein_cli.engine.results import read_results

            typer.echo(format_table(read_results(run.results), per_class=False))
            typer.echo(f"per-class IoU and charts: {run.eval_dir() / REPORT_FILE}")
        typer.echo(f"run directory: {run.path}\ncheckpoint: {run.checkpoint()}")


@app.command("eval")
def eval_(
    checkpoint: Annotated[
        str | None,
        typer.Argument(help="Checkpoint folder or hf://org/name (@revision optional); or --backbone / --adapter."),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            "--data",
            "-d",
            help="Dataset name, alias or prepared folder (repeatable, or a,b); with --estimate a folder of images too "
            "(default: a run's checkpoint: its run's data.eval).",
        ),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Evaluate this backbone's released adapter, e.g. dinov2-l.")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="A released adapter (see `rein models`).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output directory (default: RUN/eval-NAME for RUN/checkpoints/NAME, else eval/NAME)."
        ),
    ] = None,
    mode: Annotated[
        InferenceMode | None,
        typer.Option(
            "--mode",
            help="slide: crop-sized windows, averaged; whole: the image at once (default: a run's checkpoint as its "
            "run evaluates, else slide).",
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride", min=1, help="Slide stride (default: a run's checkpoint as its run, else 2/3 of the crop)."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="The split to evaluate (val; test only with --save-predictions).")
    ] = "val",
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="Test-time augmentation: average with the mirrored image's scores (default: a run's checkpoint as "
            "its run, else off).",
        ),
    ] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option("--save-predictions", help="Write each prediction as a PNG here, for the benchmark servers."),
    ] = None,
    prediction_ids: Annotated[
        PredictionIds,
        typer.Option("--prediction-ids", help="label-ids: the Cityscapes label ids the servers read; or train-ids."),
    ] = "label-ids",
    corruption: Annotated[
        str | None,
        typer.Option(
            "--corruption",
            help="Evaluate on corrupted images (Cityscapes-C protocol): all, a name (severities 1-5), name:3, "
            "or a comma list, e.g. fog:1,contrast.",
        ),
    ] = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Estimate each target's pixel accuracy and mIoU without its labels (ATC, DoC, average confidence), "
            "calibrated on a labeled dataset; unlabeled splits and plain folders of images are allowed.",
        ),
    ] = False,
    calibrate_on: Annotated[
        str | None,
        typer.Option(
            "--calibrate-on", help="The labeled dataset to calibrate on (default: the model's training data)."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            exists=True,
            help="A results.json (or `rein eval` folder) of the training dataset: report.html compares each target "
            "with it when no target is a training dataset.",
        ),
    ] = None,
    resamples: Annotated[
        int | None,
        typer.Option("--resamples", min=0, help="Bootstrap resamples of each 95% interval (default 1000; 0: none)."),
    ] = None,
    worst: Annotated[
        int | None,
        typer.Option("--worst", min=0, help="The worst images per dataset drawn for the shift report (default 8)."),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="Prepared datasets (default $REIN_HOME/datasets; a run's checkpoint without --target: its run's "
            "data.root).",
        ),
    ] = None,
    device: Device = "auto",
    window_batch: WindowBatch = None,
    precision: PrecisionOption = None,
    progress: Progress = None,
    compile_: Compile = False,
) -> None:
    """Evaluate a model on datasets: per-class IoU and mIoU per target, the DG mean over the targets it was not
    trained on, published figures beside ours; results.json, report.md, charts and the shift report report.html."""
    from rein_cli.engine.distributed import launch_rank
    from rein_cli.engine.evaluate import evaluate
    from rein_cli.engine.html_report import HTML_FILE
    from rein_cli.engine.report import REPORT_FILE, format_comparison, format_estimates, format_table
    from rein_cli.engine.results import RESULTS_FILE
    from rein_cli.engine.runs import default_eval_dir
    from rein_cli.zoo.resolve import model_sources

    out = out or default_eval_dir(checkpoint, adapter or backbone)
    results = evaluate(
        model_sources(checkpoint=checkpoint, adapter=adapter, backbone=backbone),
        targets or [],
        data_dir=data_root,
        out=out,
        mode=mode and mode.value,
        stride=stride,
        flip=flip,
        compile=compile_,
        split=split,
        save_predictions=save_predictions,
        prediction_ids=PredictionIds(prediction_ids).value,
        device=device,
        precision=precision and precision.value,
        progress=bars(progress),
        corruption=corruption,
        estimate=estimate,
        calibrate_on=calibrate_on,
        reference=reference,
        window_batch=window_batch,
        **{k: v for k, v in {"resamples": resamples, "worst": worst}.items() if v is not None},
    )
    if launch_rank() == 0:  # under torchrun, the first process speaks for all
        typer.echo(format_table(results))
        typer.echo(format_comparison(results) or "")
        if results.calibrated_on is not None:
            typer.echo(format_estimates(results))
        typer.echo(f"results: {out / RESULTS_FILE}\nreport: {out / REPORT_FILE}\nshift report: {out / HTML_FILE}")


# The commands in the order `rein --help` lists them.
app.command()(compare)
app.command()(pull)
app.command()(push)
app.command()(models)
app.command()(predict)
app.command()(convert)
app.add_typer(data_app, name="data")
