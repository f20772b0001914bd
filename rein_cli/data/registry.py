"""Known datasets by name, as data: one `DatasetSpec` per dataset, and name/path resolution to a manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rein_cli.data.manifest import MANIFEST
from rein_cli.errors import ReinError, unknown_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a dataset before it is prepared."""

    name: str
    description: str
    aliases: tuple[str, ...] = ()
    synthetic: str | None = None  # the condition, for the embedded benchmark (generated on demand)
    test_size: tuple[int, int] | None = None  # (long, short) keep-ratio resize at test time; None = native


def _synthetic(condition: str, description: str) -> DatasetSpec:
    name = "synthetic" if condition == "clear" else f"synthetic-{condition}"
    return DatasetSpec(name, description, synthetic=condition)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _synthetic("clear", "embedded synthetic street scenes, clear weather (source domain): train + val"),
        _synthetic("fog", "the synthetic val scenes in fog (depth-dependent scattering)"),
        _synthetic("night", "the synthetic val scenes at night (lamps, headlights, sensor noise)"),
        _synthetic("rain", "the synthetic val scenes in rain (streaks, wet ground, blur)"),
        _synthetic("snow", "the synthetic val scenes in snow (flakes, snow cover)"),
    )
}
ALIASES = {alias: spec.name for spec in DATASETS.values() for alias in spec.aliases}


def lookup(name: str) -> DatasetSpec | None:
    """The spec for a dataset name or alias, or None."""
    key = str(name).lower()
    return DATASETS.get(ALIASES.get(key, key))


def find_spec(name: str) -> DatasetSpec:
    """The spec for a dataset name or alias; an error with a "did you mean" otherwise."""
    spec = lookup(name)
    if spec is None:
        raise unknown_name("dataset", name, [*DATASETS, *ALIASES], "or give the path of a prepared folder (with manifest.json)")
    return spec


def _manifest_path(dataset: str | Path) -> Path | None:
    """The manifest for a dataset given as a path (an error if it has none); None for a name."""
    text = str(dataset)
    looks_like_path = "/" in text or "\\" in text or text.endswith(".json")
    if not looks_like_path and not (Path(text).exists() and lookup(text) is None):
        return None
    path = Path(text)
    manifest = path / MANIFEST if path.is_dir() else path
    if not manifest.is_file():
        raise ReinError(f"{path} is not a prepared dataset (no {MANIFEST} there); check the path or prepare it")
    return manifest


def check_dataset(dataset: str | Path) -> None:
    """Fail now on an unknown name or a path without a manifest (nothing is generated)."""
    if _manifest_path(dataset) is None:
        find_spec(str(dataset))


def resolve_dataset(dataset: str | Path, data_root: Path, *, progress: bool = True) -> Path:
    """The manifest of a dataset given by name or by the path of a prepared folder or manifest file.

    Synthetic datasets are generated on first use (deterministic, a few seconds).
    """
    manifest = _manifest_path(dataset)
    if manifest is not None:
        return manifest
    spec = find_spec(str(dataset))
    manifest = Path(data_root) / spec.name / MANIFEST
    if not manifest.is_file():
        if spec.synthetic is None:
            raise ReinError(f"dataset {spec.name} is not prepared under {data_root}")
        from rein_cli.data.synthetic import generate_synthetic

        log.info("generating the synthetic benchmark in %s (first use)", data_root)
        generate_synthetic(data_root, progress=progress)
    return manifest
