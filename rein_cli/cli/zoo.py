"""`rein pull`, `push`, `models`, `convert`: released and pretrained models fetched, shared, listed, converted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rein_cli.cli.options import Progress, bars


def pull(
    name: Annotated[str, typer.Argument(help="A backbone (dinov2-l) or a released adapter (rein-dinov2-l-gta).")],
    crop: Annotated[
        int | None, typer.Option("--crop", min=32, help="For a backbone: the crop to convert for (512).")
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="For an adapter: download its release file again, say what differs from the recorded SHA-256, size "
            "and URL, and replace the record once the new file passes the checks.",
        ),
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="For a backbone: the Hub commit, branch or tag of its weights (main)."),
    ] = None,
    progress: Progress = None,
) -> None:
    """Download, verify, convert and cache a backbone or a released adapter, so later commands work offline."""
    from rein_cli.zoo.pull import pull as pull_

    pulled = pull_(name, crop=crop, revision=revision, progress=bars(progress), refresh=refresh)
    sha = f" (SHA-256 {pulled.sha256})" if pulled.sha256 else ""
    typer.echo(f"{pulled.kind} {pulled.name} ready: {pulled.path}{sha}")


def push(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (config.json + model.safetensors).")],
    repo_id: Annotated[str, typer.Argument(help="The Hub model repo, ORG/NAME (created if needed).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
) -> None:
    """Upload a checkpoint to the Hugging Face Hub with a model card; use it anywhere as hf://ORG/NAME."""
    from rein_cli.zoo.push import push as push_

    url = push_(checkpoint, repo_id, private=private)
    typer.echo(f"pushed {checkpoint} to {repo_id}: {url}\nuse it as hf://{repo_id}")


def models() -> None:
    """Backbones and released adapters: on disk or not, size (of the files on disk; ? before a download), licence,
    published figures."""
    from rein_cli.zoo.listing import format_models, list_adapters, list_backbones

    typer.echo(format_models(list_backbones(), list_adapters()))


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
