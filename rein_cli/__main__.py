"""`python -m rein_cli` runs the command line."""

from rein_cli.cli import run

run()
