"""What the command line makes of a failure: one line on stderr, a documented exit code, and hints in the words of
the command that failed (its options and settings)."""

from __future__ import annotations

import sys
import traceback
from dataclasses import replace
from typing import Any

import typer
from typer.core import TyperGroup

from rein_cli.cli.options import Options
from rein_cli.errors import EXIT_INTERRUPTED, Advice, explain

# The words every command shares, then per command what uses less memory and which workers to use fewer of.
_ALL = Advice(
    cpu="run on the CPU with --device cpu", workers="--workers", report=" (rerun with --debug for the full report)"
)
ADVICE = {
    "train": replace(
        _ALL,
        memory="lower data.batch_size (--batch-size) or model.crop_size (--set model.crop_size=...)",
        ram=" or data.num_workers",
        workers="data.num_workers",
    ),
    "demo": replace(_ALL, memory="choose a smaller --backbone"),
    "eval": replace(_ALL, memory="use --mode slide (crop-sized windows) rather than --mode whole"),
    "predict": replace(
        _ALL, memory="use --mode slide (crop-sized windows) rather than --mode whole, or a smaller --size"
    ),
    "data": replace(
        _ALL,
        memory="use fewer --workers",
        retry=" with fewer --workers",
        again="run the same command again: a download or a preparation goes on where it stopped",
    ),
}
ANY_ADVICE = replace(
    _ALL,
    memory="lower data.batch_size or model.crop_size when training; use --mode slide rather than whole when evaluating",
)


def advice_for(command: str | None) -> Advice:
    """The hints of ``command``'s failures in its own options and settings."""
    return ADVICE.get(command or "", ANY_ADVICE)


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
            from rein_cli.engine.launch import quiet_rank, record_failure

            failure = explain(err, advice_for(ctx.invoked_subcommand))
            debug = isinstance(ctx.obj, Options) and ctx.obj.debug
            if debug:  # the traceback first, the line last
                traceback.print_exception(err, file=sys.stderr)
            # one of the processes of `rein train --devices N`: the launcher prints the line (one for all of them)
            if record_failure(failure, "".join(traceback.format_exception(err))) or (quiet_rank() and not failure.bug):
                ctx.exit(failure.code)
            typer.echo(("" if failure.code == EXIT_INTERRUPTED else "error: ") + failure.message, err=True)
            if failure.bug and not debug:  # the line first: it says what the traceback is
                traceback.print_exception(err, file=sys.stderr)
            ctx.exit(failure.code)
