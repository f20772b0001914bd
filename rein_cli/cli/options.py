"""What every command of the command line shares: the global options, the option types built from the
configuration's choices, and the defaults that depend on the terminal or the environment."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from rein_cli import config
from rein_cli.errors import ReinError


@dataclass(frozen=True)
class Options:
    """The global options and the command line's own arguments (``argv``, for `rein train --devices N` to start it
    again under torchrun), handed to every command through typer's context object."""

    debug: bool = False
    argv: tuple[str, ...] = ()


def _choices(name: str, closed: Any) -> type[StrEnum]:
    """A typer choice type from one of the config's ``Literal`` choices."""
    return StrEnum(name, {value: value for value in config.choices(closed)})


Method = _choices("Method", config.Method)
Head = _choices("Head", config.Head)
InferenceMode = _choices("InferenceMode", config.InferenceMode)
PredictionIds = _choices("PredictionIds", config.PredictionIds)
Precision = _choices("Precision", config.Precision)

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
WindowBatch = Annotated[
    int | None,
    typer.Option(
        "--window-batch",
        min=1,
        help="Most sliding windows per model call (default: automatic, from the free memory on a GPU); any gives the "
        "same results.",
    ),
]
PrecisionOption = Annotated[
    Precision | None,
    typer.Option(
        "--precision",
        help="Inference in bf16 (autocast) or fp32; auto: bf16 where the device has native bf16 (a GPU with it, or a "
        "CPU with avx512_bf16/amx_bf16), else fp32 (default: auto).",
    ),
]
Compile = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the model (compiles for minutes at first; a CPU needs g++)."),
]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Prepared datasets (default $REIN_HOME/datasets).")]


def bars(flag: bool | None) -> bool:
    """Progress bars: as asked, else when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


def datasets_folder(path: Path | None) -> Path:
    """The prepared datasets' folder: as given, else ``$REIN_HOME/datasets``."""
    return path or config.data_root(config.DataConfig())


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``--size LONGxSHORT`` -> (long, short); None without one."""
    if text is None:
        return None
    try:
        long, short = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ReinError(f'--size "{text}" must look like 1024x512 (long x short side)') from None
    if min(long, short) < 16 or short > long:
        raise ReinError(f'--size "{text}" must give a long side >= the short side >= 16, e.g. 1024x512')
    return long, short
