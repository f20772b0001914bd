"""The `rein` command line: parses options, calls one library function per command, prints.

Heavy imports (torch, timm) happen inside the commands, so `rein --help` stays fast.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rein_cli import __version__, config
from rein_cli.errors import EXIT_INTERRUPTED, ReinError, explain

log = logging.getLogger("rein_cli")


@dataclass(frozen=True)
class Options:
    """The global options, handed to every command through typer's context object."""

    debug: bool = False


# click's own ways out (usage errors: exit code 2, --help, --version, ctx.exit), taken from typer, which ships its
# own copy of click in newer versions: the base of its usage errors is the ClickException of whichever click it uses.
_CLICK_EXITS = (
    typer.Exit,
    typer.Abort,
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"),
)


class ReinGroup(TyperGroup):
    """Runs a command: every failure ends as one line on stderr and a documented exit code (docs/errors.md).

    Expected failures (`ReinError`, the operating system's errors, running out of memory, a worker's error) print
    only the line; anything else is a bug, and its traceback follows the line. ``--debug`` prints the traceback
    of every failure. click's own exits (usage errors: 2, ``--help``, ``--version``) pass through untouched."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_EXITS:
            raise
        except (Exception, KeyboardInterrupt) as err:
            failure = explain(err, ctx.invoked_subcommand)
            debug = isinstance(ctx.obj, Options) and ctx.obj.debug
            if debug:  # the traceback first, the line last
                traceback.print_exception(err, file=sys.stderr)
            typer.echo(("" if failure.code == EXIT_INTERRUPTED else "error: ") + failure.message, err=True)
            if failure.bug and not debug:  # the line first: it says what the traceback is
                traceback.print_exception(err, file=sys.stderr)
            ctx.exit(failure.code)


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
    ctx.obj = Options(debug=debug)
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("rein_cli").setLevel(logging.DEBUG if debug else logging.NOTSET)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Hub client logs every request at INFO
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
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="rein")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_ARGV: list[str] = []  # the arguments of this command line, for `rein train --devices N` to start it again


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _choices(name: str, closed: Any) -> type[StrEnum]:
    """A typer choice type from one of the config's ``Literal`` choices."""
    return StrEnum(name, {value: value for value in config.choices(closed)})


Method = _choices("Method", config.Method)
Head = _choices("Head", config.Head)
InferenceMode = _choices("InferenceMode", config.InferenceMode)
PredictionIds = StrEnum("PredictionIds", {"label-ids": "label-ids", "train-ids": "train-ids"})

Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key: --set optim.lr=2e-4 (repeatable).")
]
Mode = Annotated[
    InferenceMode, typer.Option("--mode", help="slide: crop-sized windows, averaged; whole: the image at once.")
]
Progress = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Progress bars; without them, a plain line every 30 s (default: bars when stderr is a terminal).",
    ),
]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Prepared datasets (default $REIN_HOME/datasets).")]


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _data_root(path: Path | None) -> Path:
    return path or config.data_root(config.DataConfig())


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
    progress: Progress = None,
) -> None:
    """Generate synthetic street scenes, train Rein on clear weather, evaluate on fog/night/rain/snow."""
    from rein_cli.demo import run_demo
    from rein_cli.engine.report import format_table

    bars = _progress(progress)
    result = run_demo(out, backbone=backbone, random_weights=random_weights, iters=iters, device=device, progress=bars)
    typer.echo(format_table(result))
    for note in result["notes"]:
        typer.echo(note)
    typer.echo(f"demo finished in {result['seconds']:.0f} s; results, chart and overlays in {out}/")


@app.command()
def train(
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
    progress: Progress = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the shipped recipes (setting, data, schedule, published figures).")
    ] = False,
) -> None:
    """Train a segmentor; writes a run directory with config, metrics, checkpoints and evaluation."""
    import os

    if list_:
        typer.echo(format_recipes())
        return
    if devices is not None and devices > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_launch(devices))
    from rein_cli.engine.train import train as train_

    flags = {
        "model.backbone": backbone,
        "model.method": method and method.value,
        "model.head": head and head.value,
        "data.train": data,
        "train.max_iters": iters,
        "data.batch_size": batch_size,
        "train.device": device,
    }
    name = config.recipe_name(recipe)  # recorded in the checkpoints (a resumed run keeps its own)
    if resume is not None and recipe is None:
        if not (resume / "config.yaml").is_file():
            raise ReinError(
                f"--resume {resume}: not a training run (no config.yaml); give a run directory of `rein train`"
            )
        recipe = str(resume / "config.yaml")  # the run's own settings, with the options given now on top
    cfg = config.load_config(recipe, sets, **flags)
    run = train_(cfg, out, progress=_progress(progress), resume=resume, recipe=name)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one process answers
        typer.echo(f"run directory: {run}\ncheckpoint: {run / 'checkpoints' / 'last'}")


def _launch(devices: int) -> int:
    """Run this very command under torchrun with ``devices`` processes (``--devices`` left out); its exit code."""
    import subprocess

    args, skip = [], False
    for arg in _ARGV:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}"]
    log.info(
        "starting %d processes: torchrun --standalone --nproc-per-node=%d -m rein_cli %s",
        devices,
        devices,
        " ".join(args),
    )
    return subprocess.run([*command, "-m", "rein_cli", *args]).returncode


@app.command("eval")
def eval_(
    checkpoint: Annotated[
        str | None,
        typer.Argument(help="Checkpoint folder or hf://org/name (@revision optional); or --backbone / --adapter."),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target", "-t", "--data", "-d", help="Dataset name, alias or prepared folder (repeatable, or a,b)."
        ),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Evaluate this backbone's released adapter, e.g. dinov2-l.")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="A released adapter (see `rein models`).")] = None,
    out: Out = None,
    mode: Mode = InferenceMode.slide,
    stride: Annotated[
        int | None, typer.Option("--stride", min=1, help="Slide stride (default: 2/3 of the crop).")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="The split to evaluate (val; test only with --save-predictions).")
    ] = "val",
    flip: Annotated[
        bool, typer.Option("--flip", help="Test-time augmentation: average with the mirrored image's scores.")
    ] = False,
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
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = None,
) -> None:
    """Evaluate a model on datasets: per-class IoU and mIoU per target, the DG mean over the targets it was not
    trained on, published figures beside ours; results.json, report.md and charts."""
    from rein_cli.engine.distributed import is_main
    from rein_cli.engine.report import format_table
    from rein_cli.zoo.evaluate import evaluate_named, format_comparison

    out = out or default_eval_dir(checkpoint, adapter or backbone)
    results = evaluate_named(
        targets or [],
        checkpoint=checkpoint,
        adapter=adapter,
        backbone=backbone,
        data_root=_data_root(data_root),
        out=out,
        mode=mode.value,
        stride=stride,
        flip=flip,
        split=split,
        save_predictions=save_predictions,
        prediction_ids=PredictionIds(prediction_ids).value,
        device=device,
        progress=_progress(progress),
        corruption=corruption,
    )
    if is_main():  # under torchrun, the first process speaks for all
        typer.echo(format_table(results))
        typer.echo(format_comparison(results) or "")
        typer.echo(f"results: {out / 'results.json'}\nreport: {out / 'report.md'}")


CompareOut = Annotated[Path, typer.Option("--out", "-o", help="Where compare.md, compare.csv and compare.png go.")]


@app.command()
def compare(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="results.json files, `rein eval` output folders or `rein train` runs; LABEL=PATH names the row "
            "(inputs with one label are seeds of one row)."
        ),
    ],
    targets: Annotated[
        list[str] | None,
        typer.Option("--targets", help="The columns and their order, e.g. cityscapes,bdd100k,mapillary."),
    ] = None,
    out: CompareOut = Path("compare"),
) -> None:
    """Several evaluations side by side: mIoU per target, DG mean, parameters and seeds, the paper's figures."""
    from rein_cli.engine.compare import compare as compare_
    from rein_cli.engine.compare_report import format_text, write_comparison

    chosen = [t.strip() for value in targets or [] for t in value.split(",") if t.strip()]
    table = compare_(inputs, targets=chosen or None)
    written = write_comparison(table, out)
    typer.echo(format_text(table))
    typer.echo(f"written: {', '.join(str(p) for p in written)}")


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="A backbone (dinov2-l) or a released adapter (rein-dinov2-l-gta).")],
    crop: Annotated[
        int | None, typer.Option("--crop", min=32, help="For a backbone: the crop to convert for (512).")
    ] = None,
    progress: Progress = None,
) -> None:
    """Download, verify, convert and cache a backbone or a released adapter, so later commands work offline."""
    from rein_cli.zoo.pull import pull as pull_

    pulled = pull_(name, crop=crop, progress=_progress(progress))
    sha = f" (SHA-256 {pulled.sha256})" if pulled.sha256 else ""
    typer.echo(f"{pulled.kind} {pulled.name} ready: {pulled.path}{sha}")


@app.command()
def push(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (config.json + model.safetensors).")],
    repo_id: Annotated[str, typer.Argument(help="The Hub model repo, ORG/NAME (created if needed).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
) -> None:
    """Upload a checkpoint to the Hugging Face Hub with a model card; use it anywhere as hf://ORG/NAME."""
    from rein_cli.zoo.push import push as push_

    url = push_(checkpoint, repo_id, private=private)
    typer.echo(f"pushed {checkpoint} to {repo_id}: {url}\nuse it as hf://{repo_id}")


@app.command()
def models() -> None:
    """Backbones and released adapters: on disk or not, size, licence, published figures."""
    from rein_cli.zoo.listing import format_models, list_adapters, list_backbones

    typer.echo(format_models(list_backbones(), list_adapters()))


@app.command()
def predict(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint folder or hf://org/name (@revision optional).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or directories of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("predictions"),
    mode: Mode = InferenceMode.slide,
    size: Annotated[
        str | None, typer.Option("--size", help="Resize keeping the ratio first, LONGxSHORT, e.g. 1024x512.")
    ] = None,
    device: Device = "auto",
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Segment the readable inputs, list the others, then exit 1.")
    ] = False,
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="label, colour and/or overlay (repeatable, or a,b; default: all three)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images of one size per model call (same results).")
    ] = 1,
    progress: Progress = None,
) -> None:
    """Segment images: label PNGs (train ids), colour PNGs and overlays; directories keep their subfolders."""
    from rein_cli.engine.predict import FORMATS, parse_formats
    from rein_cli.engine.predict import predict as predict_

    chosen = parse_formats(formats)  # a wrong name fails before the model loads
    bars = _progress(progress)
    written = predict_(
        checkpoint,
        inputs,
        out,
        mode=mode.value,
        size=_parse_size(size),
        device=device,
        skip_bad=skip_bad,
        formats=chosen,
        batch_size=batch_size,
        progress=bars,
    )
    folders = ", ".join(f"{FORMATS[kind][0]}/" for kind in chosen)
    typer.echo(f"{len(written)} images segmented into {out}/ ({folders})")


@app.command()
def convert(
    source: Annotated[
        Path, typer.Argument(help="An official Rein checkpoint (.pth) or Meta's dinov2_vit*14_pretrain.pth.")
    ],
    backbone: Annotated[str, typer.Option("--backbone", help="The backbone the file was made for, e.g. dinov2-l.")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Checkpoint directory, or for DINOv2 weights a .safetensors file or folder."),
    ],
    crop: Annotated[int, typer.Option("--crop", min=32, help="Training crop the weights are for: 512 or 1024.")] = 512,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model already at --out.")] = False,
) -> None:
    """Convert an official checkpoint (Rein + Mask2Former head, optionally the backbone) or DINOv2 release weights."""
    from rein_cli.engine.convert import convert as convert_

    written = convert_(source, backbone, out, crop_size=crop, overwrite=overwrite)
    typer.echo(f"wrote {written}")


data_app = typer.Typer(help="Datasets: list, describe, download, prepare and verify.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list(data_root: DataRoot = None) -> None:
    """Known datasets and what is prepared."""
    from rein_cli.data.catalog import list_datasets

    for row in list_datasets(_data_root(data_root)):
        state = ", ".join(f"{k} {v}" for k, v in row["prepared"].items()) if row["prepared"] else "-"
        aliases = f" ({row['aliases']})" if row["aliases"] else ""
        typer.echo(f"{row['name'] + aliases:<26} {state:<22} {row['description']}")


@data_app.command("info")
def data_info(name: Annotated[str, typer.Argument(help="Dataset name.")], data_root: DataRoot = None) -> None:
    """Where to get a dataset, its layout, labels and test protocol, and whether it is prepared."""
    from rein_cli.data.catalog import dataset_info

    typer.echo(dataset_info(name, _data_root(data_root)))


@data_app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help="A dataset name (see `rein data list`), or custom.")],
    sources: Annotated[
        list[str],
        typer.Option("--from", help="Official archives or extracted folders (repeatable); hf://org/name for custom."),
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Prepared folder (default DATA_ROOT/NAME).")] = None,
    custom_name: Annotated[str | None, typer.Option("--name", help="For custom: the name to prepare it as.")] = None,
    data_root: DataRoot = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: all cores).")] = None,
    allow_unknown: Annotated[
        bool, typer.Option("--allow-unknown", help="Map label values outside the dataset's ids to 255.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Prepare again a folder already prepared.")] = False,
    progress: Progress = None,
) -> None:
    """Archives or folders -> a prepared folder: checked pairs, train-id labels, manifest.json (written last)."""
    from rein_cli.data.prepare import prepare_dataset

    manifest = prepare_dataset(
        name,
        sources,
        _data_root(data_root),
        out=out,
        custom_name=custom_name,
        workers=workers,
        allow_unknown=allow_unknown,
        overwrite=overwrite,
        progress=_progress(progress),
    )
    typer.echo(f"prepared {', '.join(f'{k}: {v}' for k, v in manifest.counts.items())} -> {manifest.path}")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    dest: Annotated[
        Path | None, typer.Option("--dest", help="Where the archives go (default DATA_ROOT/downloads/NAME).")
    ] = None,
    save: Annotated[
        bool, typer.Option("--save-credentials", help="Store the login (mode 600) under $REIN_HOME.")
    ] = False,
    data_root: DataRoot = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Prepare again a dataset already prepared.")] = False,
    progress: Progress = None,
) -> None:
    """Download where the source allows it (Cityscapes, with its login), then prepare; otherwise say what to fetch."""
    from rein_cli.data.download import download

    result = download(
        name, _data_root(data_root), dest=dest, save_credentials=save, overwrite=overwrite, progress=_progress(progress)
    )
    if result.manifest is None:
        typer.echo(result.instructions)
    else:
        typer.echo(f"downloaded and prepared {result.manifest.dataset} -> {result.manifest.path}")


@data_app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="Dataset name or prepared folder.")],
    data_root: DataRoot = None,
    progress: Progress = None,
) -> None:
    """Re-check a prepared copy against its manifest (counts, files, label sizes)."""
    from rein_cli.data.verify import verify

    manifest, problems = verify(name, _data_root(data_root), progress=_progress(progress))
    for problem in problems[:20]:
        typer.echo(f"  {problem}", err=True)
    if problems:
        raise ReinError(f"{len(problems)} problems in {manifest.path}")
    typer.echo(f"{manifest.path}: ok")


def format_recipes() -> str:
    """Every shipped recipe in a few lines: name and description; backbone, data, crop, iterations, global batch;
    the published figures (test-server ones marked). Bases (names starting with "_") come last."""
    recipes = config.shipped_recipes()
    if not recipes:
        return "no shipped recipes found"
    lines, bases = [], []
    for name in recipes:
        cfg = config.load_config(name)
        method = "" if cfg.model.method == config.ModelConfig().method else f" ({cfg.model.method})"
        block = [
            f"{name}: {cfg.description or '(no description)'}",
            f"    {cfg.model.backbone}{method}  {' + '.join(cfg.data.train)} -> {', '.join(cfg.data.eval) or '-'}  "
            f"crop {cfg.model.crop_size}, {cfg.train.max_iters} iters, batch {cfg.data.batch_size}",
        ]
        if cfg.reported:
            figures = "; ".join(
                f"{dataset} "
                + " / ".join(f"{float(f['mIoU'])}" + (" test" if f["split"] == "test" else "") for f in items)
                for dataset, items in cfg.reported.items()
            )
            block.append(f"    reported: {figures}")
        (bases if name.startswith("_") else lines).extend(block)
    if bases:
        lines += ["", "bases (the recipes above inherit them with `base:`; not meant to be trained alone):", *bases]
    lines += ["", "run one with: rein train NAME (see docs/recipes.md)"]
    return "\n".join(lines)


def default_eval_dir(checkpoint: str | Path | None, name: str | None = None) -> Path:
    """run/eval for a checkpoint of a run (run/checkpoints/NAME beside run/config.yaml), eval/NAME beside any other
    checkpoint folder (so that two checkpoints never share one), and eval/NAME here for a model given by name or
    on the Hub."""
    if checkpoint is None or str(checkpoint).startswith("hf://"):
        return Path("eval") / (name or str(checkpoint).removeprefix("hf://").replace("/", "--").split("@")[0])
    folder = Path(checkpoint).resolve()
    run = folder.parent.parent
    if folder.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run / "eval"
    return folder.parent / "eval" / folder.name


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        long, short = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ReinError(f'--size "{text}" must look like 1024x512 (long x short side)') from None
    if min(long, short) < 16 or short > long:
        raise ReinError(f'--size "{text}" must give a long side >= the short side >= 16, e.g. 1024x512')
    return long, short


if __name__ == "__main__":
    run()
