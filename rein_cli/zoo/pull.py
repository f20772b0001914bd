"""`rein pull`: backbones from the Hugging Face Hub and official release files, fetched, verified, converted and
cached once under $REIN_HOME so that every later use works offline."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rein_cli.config import rein_home
from rein_cli.engine.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config
from rein_cli.errors import ReinError, unknown_name
from rein_cli.io import write_json
from rein_cli.models.backbone import BACKBONES, backbone_spec
from rein_cli.models.segmentor import pull_command
from rein_cli.zoo.backbones import BACKBONE_LICENCES
from rein_cli.zoo.release_files import checked_release, read_records
from rein_cli.zoo.releases import DEFAULT_RELEASES_URL, RELEASES, Release

log = logging.getLogger(__name__)


def zoo_home() -> Path:
    """$REIN_HOME/zoo: release files (``releases/``), converted checkpoints (``models/``), recorded hashes."""
    return rein_home() / "zoo"


def releases_url() -> str:
    """``$REIN_RELEASES_URL`` (a mirror of the release files), else the official repository's release downloads."""
    return (os.environ.get("REIN_RELEASES_URL") or DEFAULT_RELEASES_URL).rstrip("/")


def release_url(release: Release) -> str:
    return f"{releases_url()}/{release.path}"


def checkpoint_path(name: str) -> Path:
    """Where the converted checkpoint of a release lives once pulled."""
    return zoo_home() / "models" / name


def find_release(name: str) -> Release:
    if name not in RELEASES:
        raise unknown_name("released adapter", name, RELEASES, "`rein models` lists them")
    return RELEASES[name]


def kind_of(name: str) -> str:
    """``backbone`` or ``adapter``; an error with a "did you mean" for anything else."""
    if name in BACKBONES:
        return "backbone"
    if name in RELEASES:
        return "adapter"
    raise unknown_name("model", name, [*BACKBONES, *RELEASES], "`rein models` lists the backbones and adapters")


# ----------------------------------------------------------------------------- recorded hashes


def recorded_hashes() -> dict[str, dict]:
    """{release name: {"sha256", "size", "url"}} of the first checked download of each release without a published
    hash (`rein pull NAME --refresh` replaces one)."""
    return read_records(zoo_home())


# ----------------------------------------------------------------------------- what is on disk


def backbone_file(name: str, revision: str | None = None) -> Path | None:
    """The backbone's pretrained weights in the local Hub cache (``model.safetensors``, else ``pytorch_model.bin``,
    as timm loads them), or None."""
    from rein_cli.hub import cached_weights

    return cached_weights(backbone_spec(name).hub_repo, revision=revision)


def adapter_ready(name: str) -> bool:
    """The release's checkpoint is converted and its backbone's weights are in the Hub cache."""
    release = find_release(name)
    folder = checkpoint_path(name)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        return False
    revision = read_checkpoint_config(folder)["model"].get("backbone_revision")
    return backbone_file(release.backbone, revision) is not None


# ----------------------------------------------------------------------------- pulling


@dataclass(frozen=True)
class Pulled:
    """What `pull` made ready: a backbone's converted weights, or an adapter's checkpoint folder."""

    name: str
    kind: str
    path: Path
    revision: str | None = None  # a backbone's Hub commit
    sha256: str | None = None  # an adapter's release file


def pull(
    name: str, *, crop: int | None = None, revision: str | None = None, progress: bool = True, refresh: bool = False
) -> Pulled:
    """Make a backbone (at a Hub ``revision``, default main) or a released adapter ready for offline use (see
    `pull_backbone`, `pull_adapter`)."""
    if kind_of(name) == "backbone":
        if refresh:
            raise ReinError(
                f"--refresh is for released adapters (rein-...), whose first download's SHA-256 rein records; "
                f"{name} comes from the Hugging Face Hub, which checks its files itself: run `rein pull {name}`"
            )
        return pull_backbone(name, crop=crop or 512, revision=revision)
    if revision is not None:
        raise ReinError(f"--revision is for backbones; {name} is a released adapter, pulled as published")
    return pull_adapter(name, progress=progress, refresh=refresh)


def pull_backbone(
    name: str, *, crop: int = 512, revision: str | None = None, timm_kwargs: Mapping[str, Any] | None = None
) -> Pulled:
    """Download a backbone's pretrained weights into the Hub cache (after saying what, how big and under which
    licence) and write their official conversion for ``crop`` once under $REIN_HOME/weights. The repo and file are
    timm's: its pretrained config's Hub repo, ``model.safetensors`` or else ``pytorch_model.bin``. ``timm_kwargs``:
    architecture overrides, as ``model.backbone_kwargs``."""
    from rein_cli.hub import download_weights, offline, revision_of, weights_file
    from rein_cli.models.weights import convert_backbone_file

    spec = backbone_spec(name)
    source = backbone_file(name, revision)
    if source is None:
        if offline():
            raise ReinError(
                f"the weights of {name} ({spec.hub_repo}) are not in the local Hugging Face cache and the Hub is "
                f"offline (HF_HUB_OFFLINE=1 or --offline); run {pull_command(name, revision)} with a connection "
                "and without --offline, then rerun"
            )
        fetch = pull_command(name, revision)
        filename, size = weights_file(spec.hub_repo, revision, fetch=fetch)
        licence = BACKBONE_LICENCES.get(name, "see the Hub repo")
        log.info("downloading %s: %s/%s (%s), licence %s", name, spec.hub_repo, filename, _size(size), licence)
        source = download_weights(spec.hub_repo, revision, filename=filename, fetch=fetch)
    converted = convert_backbone_file(name, source, crop, **(timm_kwargs or {}))
    return Pulled(name, "backbone", converted, revision=revision_of(source))


def pull_adapter(name: str, *, progress: bool = True, refresh: bool = False) -> Pulled:
    """Download a release file (resumable, into its own locked staging file), check it (it loads with
    ``weights_only=True`` and converts strictly) before it is kept and its SHA-256 compared with the published or
    first-recorded one, write its conversion under $REIN_HOME/zoo/models, and pull its backbone for offline use.
    ``refresh``: download it again and replace the recorded SHA-256 once the new file passes the checks."""
    from rein_cli.engine.checkpoint import save_checkpoint
    from rein_cli.hub import offline

    release = find_release(name)
    if release.unsupported:
        raise ReinError(f"{name} cannot be used: {release.unsupported}")
    folder = checkpoint_path(name)
    if refresh or not (folder / CONFIG_FILE).is_file():
        url = release_url(release)
        segmentor = checked_release(release, url, zoo_home(), progress=progress, refresh=refresh, offline=offline())
        save_checkpoint(segmentor, folder, info={"converted_from": release.file})
    config = read_checkpoint_config(folder)
    model = config["model"]
    backbone = pull_backbone(
        release.backbone,
        crop=release.crop,
        revision=model.get("backbone_revision"),
        timm_kwargs=model["backbone_kwargs"],
    )
    if backbone.revision and not config["model"].get("backbone_revision"):
        config["model"]["backbone_revision"] = backbone.revision  # the Hub commit, never a local path
        write_json(folder / CONFIG_FILE, config)
    return Pulled(name, "adapter", folder, backbone.revision, config.get("provenance", {}).get("sha256"))


def _size(size: int | None) -> str:
    return f"{size / 1e9:.2f} GB" if size and size >= 1e8 else f"{size / 1e6:.1f} MB" if size else "size unknown"
