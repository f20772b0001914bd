"""`python -m rein_cli` runs the command line (also what torchrun starts: ``torchrun ... -m rein_cli train ...``)."""

from rein_cli.cli import run

if __name__ == "__main__":
    run()
