"""One dataset class over any prepared manifest, and the infinite training loader."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rein_cli.data.manifest import Manifest, read_manifest
from rein_cli.data.pairs import read_pair
from rein_cli.errors import ReinError
from rein_cli.parallel import end_with_parent


class SegmentationDataset(Dataset):
    """(image, label) pairs of one split of a prepared dataset, passed through ``transform``.

    Every item is checked as `prepare` and `rein data verify` check it (`rein_cli.data.pairs.read_pair`): decoded in
    full, label of its image's size, values within the manifest's classes or its ignore index.
    Without a transform, items are (H, W, 3) uint8 and (H, W) uint8 tensors. Each item is a dict with
    ``image``, ``label`` and ``path`` (the image file, for naming outputs).
    """

    def __init__(self, manifest: Path | Manifest, split: str, transform: Callable | None = None) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        self.split = split
        self.samples = self.manifest.samples(split)
        if not self.samples:
            raise ReinError(f"split {split} of {self.manifest.path} is empty")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.samples[index]
        rgb, ids = read_pair(
            image_path, label_path, num_classes=len(self.manifest.classes), ignore_index=self.manifest.ignore_index
        )  # the checks of `prepare` and `rein data verify`
        image = torch.from_numpy(np.array(rgb))
        label = torch.from_numpy(np.array(ids)) if ids is not None else None
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "path": str(image_path)}


def _collate(items: list[dict]) -> tuple[Tensor, Tensor]:
    return torch.stack([i["image"] for i in items]), torch.stack([i["label"] for i in items])


def _init_worker(parent: int, worker_id: int) -> None:
    end_with_parent(parent)


def infinite_loader(
    dataset: Dataset, *, batch_size: int, num_workers: int, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled (images, labels) batches forever; reshuffled every pass, deterministic for a seed.

    The worker processes end with this process, even when it is killed (`rein_cli.parallel.end_with_parent`);
    that changes nothing in their seeding (torch seeds each worker before calling ``worker_init_fn``)."""
    if len(dataset) < batch_size:
        raise ReinError(f"the training set has {len(dataset)} images, fewer than the batch size {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        collate_fn=_collate,
        worker_init_fn=functools.partial(_init_worker, os.getpid()) if num_workers > 0 else None,
    )
    while True:
        yield from loader
