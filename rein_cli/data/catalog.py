"""The one resolver from a dataset name or folder to its manifest, and `rein data list` / `rein data info`."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rein_cli import config
from rein_cli.data.manifest import MANIFEST, Manifest, read_manifest
from rein_cli.data.registry import DATASETS, DatasetSpec, find_spec, lookup
from rein_cli.errors import ReinError


@dataclass(frozen=True)
class Located:
    """Where a dataset's manifest is, or will be once prepared; ``spec`` is its registry entry, if any; ``given``
    the name or path as the user wrote it."""

    manifest: Path
    spec: DatasetSpec | None = None
    given: str = field(default="", compare=False)  # how it was named does not change which dataset it is

    @property
    def prepared(self) -> bool:
        return self.manifest.is_file()

    @property
    def name(self) -> str:
        """The registry name, else what was given."""
        return self.spec.name if self.spec else self.given or str(self.manifest.parent)

    def within(self, datasets: tuple[str, ...]) -> bool:
        """Whether this is one of the registry ``datasets`` or a part of one (``acdc-fog`` of ``acdc``)."""
        return self.spec is not None and (self.spec.name in datasets or self.spec.parent in datasets)


def locate(dataset: str | Path, data_root: Path) -> Located:
    """Resolve a dataset given as a path (a prepared folder or its manifest file), a registry name or alias
    (prepared under ``data_root`` or not yet), or the name of a custom dataset prepared under ``data_root``.

    Nothing is read or generated. Unknown names, and paths without a manifest, are errors."""
    text = str(dataset)
    data_root = Path(data_root)
    looks_like_path = "/" in text or os.sep in text or text.endswith(".json")
    if not looks_like_path:
        spec = lookup(text)
        if spec is not None:
            return Located(data_root / spec.name / MANIFEST, spec, text)
        if (data_root / text / MANIFEST).is_file():  # a custom dataset prepared under its name
            return Located(data_root / text / MANIFEST, None, text)
        if not Path(text).exists():
            find_spec(text)  # raises: unknown name, with a "did you mean"
    path = Path(text)
    manifest = path / MANIFEST if path.is_dir() else path
    if not manifest.is_file():
        if (path / "classes.yaml").is_file():  # a custom folder as it comes, not yet checked and converted
            raise ReinError(
                f"{path} is a custom dataset folder that is not prepared yet; run "
                f"`{prepare_command('custom', data_root, path, '--name', 'NAME')}`, then use NAME"
            )
        raise ReinError(f"{path} is not a prepared dataset (no {MANIFEST} there); check the path or prepare it")
    return Located(manifest, None, text)


def prepare_command(name: str, data_root: Path, source: str | Path = "PATH", *extra: str) -> str:
    """The `rein data prepare` that prepares ``name`` where ``data_root`` looks for it (``--data-root`` when that
    is not the default), from ``source`` (PATH: the user's archives or folder)."""
    from rein_cli.config import DataConfig
    from rein_cli.config import data_root as default_root

    words = ["rein", "data", "prepare", name, "--from", str(source), *extra]
    words += [] if Path(data_root) == default_root(DataConfig()) else ["--data-root", str(data_root)]
    return shlex.join(words)


def root_option(data_root: Path) -> str:
    """`` --data-root DIR`` for a command to suggest when ``data_root`` is not the default one, else nothing."""
    same = Path(data_root).absolute() == config.data_root(config.DataConfig()).absolute()
    return "" if same else f" --data-root {shlex.quote(str(data_root))}"


def prepare_target(spec: DatasetSpec, data_root: Path) -> Path:
    """The folder a registry dataset is prepared into (a subset such as acdc-fog: its parent's folder)."""
    return Path(data_root) / (spec.parent or spec.name)


def _counts(folder: Path) -> dict[str, int] | None:
    try:
        return read_manifest(folder / MANIFEST).counts
    except ReinError:
        return None


def list_datasets(data_root: Path) -> list[dict]:
    """Every registry dataset and every other prepared folder under ``data_root``, with its prepared counts."""
    rows = [
        {
            "name": s.name,
            "aliases": ", ".join(s.aliases),
            "prepared": _counts(data_root / s.name),
            "description": s.description,
        }
        for s in DATASETS.values()
    ]
    if data_root.is_dir():
        for folder in sorted(p for p in data_root.iterdir() if (p / MANIFEST).is_file() and p.name not in DATASETS):
            rows.append(
                {"name": folder.name, "aliases": "", "prepared": _counts(folder), "description": "custom dataset"}
            )
    return rows


def dataset_info(name: str | Path, data_root: Path) -> str:
    """A readable description of a dataset given as `locate` takes it (a registry name or alias, a custom dataset
    prepared under ``data_root``, a prepared folder): for a registry dataset its source, licence, archives, layout,
    label format and test protocol; for any other its classes, splits and source; and where it is prepared."""
    found = locate(name, data_root)
    spec = found.spec
    if spec is None:  # a folder, or a custom name: its manifest says what it is
        manifest = read_manifest(found.manifest)
        spec = lookup(manifest.dataset)
        if spec is None:
            return _custom_info(manifest)
    lines = [f"{spec.name}: {spec.description}"]
    if spec.aliases:
        lines.append(f"  aliases: {', '.join(spec.aliases)}")
    if spec.synthetic is None:
        lines += [
            f"  get it at: {spec.homepage}",
            f"  licence: {spec.licence}",
            f"  archives: {', '.join(spec.archives)}",
        ]
        for split, rule in spec.splits.items():
            count = f" ({rule.count} images)" if rule.count else ""
            labels = rule.labels[0][1] if rule.labels else "none (kept by the benchmark server)"
            lines.append(f"  {split}: {rule.images}{count}, labels {labels}")
        half = "; val evaluated at half resolution" if spec.half_resolution else ""
        lines.append(f"  labels: {spec.label_format}{half}")
        how = f"rein data download {spec.name}" if spec.download != "manual" else f"by hand: {spec.instructions}"
        lines.append(f"  download: {how}")
    if spec.test_size:
        size = f"  test-time resize (keep ratio): {spec.test_size[0]}x{spec.test_size[1]} (512 crops)"
        if spec.test_size_1024:
            size += f", {spec.test_size_1024[0]}x{spec.test_size_1024[1]} (1024 crops)"
        lines.append(size)
    folder = found.manifest.parent
    counts = _counts(folder)
    lines.append(f"  prepared: {folder} {counts}" if counts else f"  prepared: no (under {data_root})")
    return "\n".join(lines)


def _custom_info(manifest: Manifest) -> str:
    """A dataset outside the registry (`rein data prepare custom`): its classes, splits, source and folder."""
    raw = json.loads(manifest.path.read_text())  # read and checked already: the keys beyond the contract
    source = raw.get("source")
    origin = (source.get("folder") or source.get("hub")) if isinstance(source, dict) else source
    shown = ", ".join(manifest.classes[:8]) + (", ..." if len(manifest.classes) > 8 else "")
    lines = [
        f"{manifest.dataset}: custom dataset ({len(manifest.classes)} classes: {shown})",
        *(f"  {split}: {count} image{'' if count == 1 else 's'}" for split, count in manifest.counts.items()),
        f"  labels: train ids 0-{len(manifest.classes) - 1}, {manifest.ignore_index} = ignore"
        + (f" ({raw['converted']})" if raw.get("converted") else ""),
        "  test-time resize: none (its own size)",
    ]
    lines += [f"  prepared from: {origin}"] if origin else []
    lines.append(f"  prepared: {manifest.root} {manifest.counts}")
    return "\n".join(lines)
