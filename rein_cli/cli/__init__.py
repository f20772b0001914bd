"""The `rein` command line (`app`, entered by `run`): the commands in `app`, `rein data` in `data`, the options they
share in `options`, what a failure prints in `failures`."""

from __future__ import annotations

from rein_cli.cli.app import app, main, run
from rein_cli.cli.failures import ADVICE, advice_for
from rein_cli.cli.options import Options

__all__ = ["ADVICE", "Options", "advice_for", "app", "main", "run"]
