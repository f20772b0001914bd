"""Writing the synthetic benchmark: one prepared folder with its manifest per condition."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rein_cli.data.manifest import write_manifest
from rein_cli.data.registry import SYNTHETIC_CONDITIONS, synthetic_name
from rein_cli.data.synthetic.scene import make_scene
from rein_cli.data.synthetic.weather import render
from rein_cli.errors import ReinError
from rein_cli.io import save_image
from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from rein_cli.parallel import parallel_map

GENERATOR_VERSION = 1
SPLITS = ("train", "val")


def _entry(split: str, index: int) -> dict[str, str]:
    """Where scene ``index`` of ``split`` is written, relative to its dataset folder (a manifest entry)."""
    return {"image": f"images/{split}/{index:06d}.jpg", "label": f"labels/{split}/{index:06d}.png"}


def _render_task(task: tuple[Path, int, int, int, int, int, tuple[str, ...]]) -> None:
    """Render scene ``index`` of a split under every requested condition and write the files."""
    tmp, seed, split_id, index, width, height, conditions = task
    split = SPLITS[split_id]
    entry = _entry(split, index)
    scene = make_scene(np.random.default_rng([seed, split_id, index]), width, height)
    label = tmp / synthetic_name("clear") / entry["label"]
    save_image(label, scene.labels, compress_level=1)
    for condition in conditions if split == "val" else ("clear",):
        folder = tmp / synthetic_name(condition)
        rng = np.random.default_rng([seed, split_id, index, SYNTHETIC_CONDITIONS.index(condition)])
        save_image(folder / entry["image"], render(scene, condition, rng))
        if condition != "clear":
            target = folder / entry["label"]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(label, target)
            except OSError:
                shutil.copyfile(label, target)


def generate_synthetic(
    root: Path,
    *,
    num_train: int = 500,
    num_val: int = 100,
    width: int = 512,
    height: int = 256,
    seed: int = 0,
    conditions: Sequence[str] = SYNTHETIC_CONDITIONS,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the synthetic benchmark under ``root``; returns {dataset name: manifest path}.

    ``root/synthetic`` holds the clear train and val scenes; ``root/synthetic-fog`` (night, rain, snow) the
    same val scenes under that condition, with the clear labels hard-linked. Everything is seeded: the same
    arguments give the same bytes, whatever the number of ``workers``. Existing folders of the same names are
    replaced only once the new ones are complete.
    """
    conditions = tuple(dict.fromkeys(("clear", *conditions)))
    for condition in conditions:
        if condition not in SYNTHETIC_CONDITIONS:
            raise ReinError(f'unknown condition "{condition}"; choose from {", ".join(SYNTHETIC_CONDITIONS)}')
    if width < 64 or height < 64 or width % 16 or height % 16:
        raise ReinError(f"synthetic size {width}x{height} must be at least 64x64 and a multiple of 16")
    if num_train < 0 or num_val < 1:
        raise ReinError(f"need num_train >= 0 and num_val >= 1 (got {num_train}, {num_val})")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".synthetic-"))
    except OSError as err:
        raise ReinError(f"cannot write the synthetic benchmark to {root}: {err.strerror}") from err
    try:
        tasks = [(tmp, seed, 0, i, width, height, conditions) for i in range(num_train)]
        tasks += [(tmp, seed, 1, i, width, height, conditions) for i in range(num_val)]
        parallel_map(_render_task, tasks, workers=workers, progress=progress, desc="generating scenes", unit="scene")
        for condition in conditions:
            name = synthetic_name(condition)
            counts = {"train": num_train, "val": num_val} if condition == "clear" else {"val": num_val}
            splits = {split: [_entry(split, i) for i in range(n)] for split, n in counts.items() if n}
            source = {
                "generator": GENERATOR_VERSION,
                "seed": seed,
                "width": width,
                "height": height,
                "condition": condition,
            }
            write_manifest(
                tmp / name,
                dataset=name,
                version=str(GENERATOR_VERSION),
                source=source,
                classes=CITYSCAPES_CLASSES,
                palette=CITYSCAPES_PALETTE,
                splits=splits,
            )
        manifests = {}
        for condition in conditions:  # move each finished folder into place
            name = synthetic_name(condition)
            final = root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp / name, final)
            manifests[name] = final / "manifest.json"
        return manifests
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
