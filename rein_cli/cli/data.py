"""`rein data`: list, describe, download, prepare and verify datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rein_cli.cli.options import DataRoot, Progress, bars, datasets_folder
from rein_cli.errors import ReinError

data_app = typer.Typer(help="Datasets: list, describe, download, prepare and verify.", no_args_is_help=True)


@data_app.command("list")
def data_list(data_root: DataRoot = None) -> None:
    """Known datasets and what is prepared."""
    from rein_cli.data.catalog import list_datasets

    for row in list_datasets(datasets_folder(data_root)):
        state = ", ".join(f"{k} {v}" for k, v in row["prepared"].items()) if row["prepared"] else "-"
        aliases = f" ({row['aliases']})" if row["aliases"] else ""
        typer.echo(f"{row['name'] + aliases:<26} {state:<22} {row['description']}")


@data_app.command("info")
def data_info(name: Annotated[str, typer.Argument(help="Dataset name.")], data_root: DataRoot = None) -> None:
    """Where to get a dataset, its layout, labels and test protocol, and whether it is prepared."""
    from rein_cli.data.catalog import dataset_info

    typer.echo(dataset_info(name, datasets_folder(data_root)))


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
        datasets_folder(data_root),
        out=out,
        custom_name=custom_name,
        workers=workers,
        allow_unknown=allow_unknown,
        overwrite=overwrite,
        progress=bars(progress),
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
        name, datasets_folder(data_root), dest=dest, save_credentials=save, overwrite=overwrite, progress=bars(progress)
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

    manifest, problems = verify(name, datasets_folder(data_root), progress=bars(progress))
    for problem in problems[:20]:
        typer.echo(f"  {problem}", err=True)
    if problems:
        raise ReinError(f"{len(problems)} problems in {manifest.path}")
    typer.echo(f"{manifest.path}: ok")
