"""`rein predict` and `rein compare`: masks for images, and several evaluations side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rein_cli.cli.options import (
    Compile,
    Device,
    InferenceMode,
    Mode,
    PrecisionOption,
    Progress,
    WindowBatch,
    bars,
    parse_size,
)

CompareOut = Annotated[Path, typer.Option("--out", "-o", help="Where compare.md, compare.csv and compare.png go.")]


def compare(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="results.json files, `rein eval` output folders or `rein train` runs; LABEL=PATH names the row "
            "(inputs with one label that differ in the seed alone are seeds of one row)."
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
    window_batch: WindowBatch = None,
    precision: PrecisionOption = None,
    progress: Progress = None,
    compile_: Compile = False,
) -> None:
    """Segment images: label PNGs (train ids), colour PNGs and overlays; directories keep their subfolders."""
    from rein_cli.engine.predict import FORMATS, parse_formats
    from rein_cli.engine.predict import predict as predict_

    chosen = parse_formats(formats)  # a wrong name fails before the model loads
    shown = bars(progress)
    written = predict_(
        checkpoint,
        inputs,
        out,
        mode=mode.value,
        size=parse_size(size),
        device=device,
        skip_bad=skip_bad,
        formats=chosen,
        batch_size=batch_size,
        window_batch=window_batch,
        precision=precision.value if precision is not None else "auto",
        progress=shown,
        compile=compile_,
    )
    folders = ", ".join(f"{FORMATS[kind][0]}/" for kind in chosen)
    typer.echo(f"{len(written)} images segmented into {out}/ ({folders})")
