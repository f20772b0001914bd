"""A model given by name -> the sources an evaluation loads: a checkpoint (folder or ``hf://``), a released adapter,
or a backbone's default release (its Cityscapes release for ACDC targets), each with what it needs before it can be
used and the published figures it carries. Nothing is downloaded here."""

from __future__ import annotations

import json
from pathlib import Path

from rein_cli.engine.checkpoint import CONFIG_FILE
from rein_cli.engine.sources import ModelSource, checkpoint_source
from rein_cli.errors import ReinError
from rein_cli.zoo.pull import adapter_ready, checkpoint_path, find_release, pull_adapter
from rein_cli.zoo.releases import ACDC_RELEASE, DEFAULT_RELEASE, RELEASES, Release


def model_sources(
    *, checkpoint: str | Path | None = None, adapter: str | None = None, backbone: str | None = None
) -> list[ModelSource]:
    """The model named by exactly one of ``checkpoint`` (a folder or ``hf://org/name[@revision]``), ``adapter`` (a
    released adapter, `rein models`) or ``backbone`` (its default release, and its Cityscapes release for ACDC
    targets where it has one)."""
    given = [x for x in (checkpoint, adapter, backbone) if x]
    if len(given) != 1:
        raise ReinError(
            "name the model once: a checkpoint (folder or hf://org/name), --adapter NAME or --backbone NAME"
        )
    if checkpoint:
        return [checkpoint_source(checkpoint, assumed=tuple(release_assumed(checkpoint)))]
    if adapter:
        return [release_source(find_release(adapter), "the adapter given")]
    if backbone not in DEFAULT_RELEASE:
        from rein_cli.models.backbone import backbone_spec

        backbone_spec(backbone)  # an unknown name: "did you mean"
        raise ReinError(
            f"there is no released Rein adapter for {backbone}; train one with `rein train --backbone {backbone} "
            f"--data gta5` and evaluate its checkpoint, or see `rein models`"
        )
    sources = []
    if backbone in ACDC_RELEASE:
        why = f"the Cityscapes release of {backbone}, for ACDC"
        sources.append(release_source(find_release(ACDC_RELEASE[backbone]), why, only=("acdc",)))
    sources.append(release_source(find_release(DEFAULT_RELEASE[backbone]), f"the default release of {backbone}"))
    return sources


def release_source(release: Release, why: str, only: tuple[str, ...] | None = None) -> ModelSource:
    """A released adapter as a source: its converted checkpoint (pulled before it is loaded, when it is not yet),
    its training data and published figures."""
    missing = (f"{release.name} cannot be used: {release.unsupported}",) if release.unsupported else ()
    ready = not missing and adapter_ready(release.name)
    pending = (
        None if ready or missing else f"the adapter {release.name}: `rein pull {release.name}` (needs a connection)"
    )

    def fetch(progress: bool) -> None:
        if not adapter_ready(release.name):
            pull_adapter(release.name, progress=progress)

    return ModelSource(
        release.name,
        checkpoint=checkpoint_path(release.name),
        why=why,
        trained_on=release.trained_on.split("+"),
        reported=release.reported,
        only=only,
        missing=missing,
        pending=pending,
        fetch=fetch,
        assumed=tuple(release.assumed()),
    )


def release_assumed(checkpoint: str | Path) -> list[str]:
    """The assumed settings of the release a local checkpoint folder was converted from (its config.json names the
    adapter), so that evaluating the folder says them too; none for anything else."""
    config = Path(str(checkpoint)) / CONFIG_FILE
    try:
        adapter = json.loads(config.read_text()).get("provenance", {}).get("adapter")
    except (OSError, ValueError, AttributeError):
        return []  # not a local checkpoint (hf://), or one whose problems loading it will name
    return RELEASES[adapter].assumed() if adapter in RELEASES else []
