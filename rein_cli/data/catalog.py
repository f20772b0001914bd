"""What is known and what is prepared: `rein data list`, `info` and `verify`."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from rein_cli.data.manifest import MANIFEST, read_manifest
from rein_cli.data.registry import DATASETS, find_spec, resolve_dataset
from rein_cli.errors import ReinError


def _counts(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("counts")
    except (OSError, json.JSONDecodeError):
        return None


def list_datasets(data_root: Path) -> list[dict]:
    """Every registry dataset and every other prepared folder under ``data_root``, with its prepared counts."""
    rows = [
        {"name": s.name, "aliases": ", ".join(s.aliases), "prepared": _counts(data_root / s.name), "description": s.description}
        for s in DATASETS.values()
    ]
    if data_root.is_dir():
        for folder in sorted(p for p in data_root.iterdir() if (p / MANIFEST).is_file() and p.name not in DATASETS):
            rows.append({"name": folder.name, "aliases": "", "prepared": _counts(folder), "description": "custom dataset"})
    return rows


def dataset_info(name: str, data_root: Path) -> str:
    """A readable description: source, licence, archives, layout, label format, test protocol, prepared state."""
    spec = find_spec(name)
    lines = [f"{spec.name}: {spec.description}"]
    if spec.aliases:
        lines.append(f"  aliases: {', '.join(spec.aliases)}")
    if spec.synthetic is None:
        lines += [f"  get it at: {spec.homepage}", f"  licence: {spec.licence}", f"  archives: {', '.join(spec.archives)}"]
        for split, rule in spec.splits.items():
            count = f" ({rule.count} images)" if rule.count else ""
            lines.append(f"  {split}: {rule.images}{count}, labels {rule.labels[0][1] if rule.labels else '-'}")
        lines.append(f"  labels: {spec.label_format}" + ("; val evaluated at half resolution" if spec.half_resolution else ""))
        how = f"rein data download {spec.name}" if spec.download != "manual" else f"by hand: {spec.instructions}"
        lines.append(f"  download: {how}")
    if spec.test_size:
        size = f"  test-time resize (keep ratio): {spec.test_size[0]}x{spec.test_size[1]} (512 crops)"
        if spec.test_size_1024:
            size += f", {spec.test_size_1024[0]}x{spec.test_size_1024[1]} (1024 crops)"
        lines.append(size)
    counts = _counts(data_root / spec.name)
    lines.append(f"  prepared: {data_root / spec.name} {counts}" if counts else f"  prepared: no (under {data_root})")
    return "\n".join(lines)


def verify(dataset: str, data_root: Path, *, progress: bool = True) -> tuple[Path, list[str]]:
    """Re-check a prepared copy against its manifest: counts, every file present, label size = image size."""
    if Path(dataset).exists() or "/" in str(dataset):
        manifest_path = Path(dataset) / MANIFEST if Path(dataset).is_dir() else Path(dataset)
    else:
        spec = find_spec(dataset) if not (data_root / dataset / MANIFEST).is_file() else None
        manifest_path = data_root / (spec.name if spec else dataset) / MANIFEST
        if spec is not None and spec.synthetic is not None:
            manifest_path = resolve_dataset(dataset, data_root, progress=progress)
    if not manifest_path.is_file():
        raise ReinError(f"{dataset} is not prepared (no {manifest_path}); run `rein data prepare {dataset} --from ...`")
    manifest = read_manifest(manifest_path)
    declared = json.loads(manifest_path.read_text()).get("counts", {})
    problems = []
    for split in manifest.splits:
        samples = manifest.samples(split)
        if declared.get(split) != len(samples):
            problems.append(f"{split}: the manifest lists {len(samples)} pairs but counts {declared.get(split)}")
        for image, label in tqdm(samples, desc=f"verifying {split}", disable=not progress, leave=False):
            if not image.is_file():
                problems.append(f"missing image {image}")
                continue
            if label is None:
                continue
            if not label.is_file():
                problems.append(f"missing label {label}")
                continue
            try:
                with Image.open(image) as a, Image.open(label) as b:
                    if a.size != b.size:
                        problems.append(f"label {label} is {b.size[0]}x{b.size[1]}, its image {a.size[0]}x{a.size[1]}")
            except OSError as err:
                problems.append(f"cannot read {image} or {label}: {err}")
    return manifest_path, problems
