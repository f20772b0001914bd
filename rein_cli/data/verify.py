"""`rein data verify`: re-check a prepared copy against its manifest (counts, every file present, label sizes)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from rein_cli.data.manifest import Manifest
from rein_cli.data.prepare import ensure_prepared
from rein_cli.progress import track


def verify(dataset: str | Path, data_root: Path, *, progress: bool = True) -> tuple[Manifest, list[str]]:
    """The dataset's manifest and the problems found (none: the copy is complete)."""
    manifest = ensure_prepared(dataset, data_root, progress=progress)
    problems = []
    for split in manifest.splits:
        samples = manifest.samples(split)
        if manifest.counts.get(split) != len(samples):
            problems.append(f"{split}: the manifest lists {len(samples)} pairs but counts {manifest.counts.get(split)}")
        for image, label in track(samples, desc=f"verifying {split}", unit="pair", bar=progress):
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
    return manifest, problems
