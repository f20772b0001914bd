"""`rein data verify`: re-check a prepared copy against its manifest (counts, every file present) and every pair
with the checks training makes (decode, mode, size, label values)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from rein_cli.data.manifest import Manifest
from rein_cli.data.pairs import read_pair
from rein_cli.data.prepare import ensure_prepared
from rein_cli.errors import ReinError
from rein_cli.parallel import parallel_map


def check_sample(sample: tuple[Path, Path | None], *, num_classes: int, ignore_index: int) -> str | None:
    """The problem with one (image, label) pair of a manifest, or None."""
    image, label = sample
    if not image.is_file():
        return f"missing image {image}"
    if label is not None and not label.is_file():
        return f"missing label {label}"
    try:
        read_pair(image, label, num_classes=num_classes, ignore_index=ignore_index)
    except ReinError as err:
        return str(err)
    return None


def verify(
    dataset: str | Path, data_root: Path, *, workers: int | None = None, progress: bool = True
) -> tuple[Manifest, list[str]]:
    """The dataset's manifest and the problems found (none: the copy is complete and training can read every pair).
    Every file is decoded, in ``workers`` processes (default: all cores)."""
    manifest = ensure_prepared(dataset, data_root, progress=progress)
    check = partial(check_sample, num_classes=len(manifest.classes), ignore_index=manifest.ignore_index)
    problems = []
    for split in manifest.splits:
        samples = manifest.samples(split)
        if manifest.counts.get(split) != len(samples):
            problems.append(f"{split}: the manifest lists {len(samples)} pairs but counts {manifest.counts.get(split)}")
        found = parallel_map(check, samples, workers=workers, progress=progress, desc=f"verifying {split}", unit="pair")
        problems += [problem for problem in found if problem is not None]
    return manifest, problems
