"""One dataset class over any prepared manifest, and the infinite training loader."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from rein_cli.config import per_device_batch
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


def _hash_seed(*values: int) -> int:
    """A 63-bit seed hashed from ``values`` (numpy's SeedSequence)."""
    words = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 ^ int(words[1])  # < 2**63


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of one training sample's augmentation: a hash of (run seed, epoch, position in the epoch)."""
    return _hash_seed(seed, epoch, position)


def epoch_permutation(seed: int, epoch: int, size: int) -> Tensor:
    """The order of the training set in ``epoch``: a permutation drawn from a generator seeded with (seed, epoch)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(_hash_seed(seed, epoch, 0x5EED)))


class TrainingSampler(Sampler):
    """Endless (index, sample seed) pairs for one process, starting at iteration ``start``; resumable exactly.

    The global stream is every epoch's permutation (`epoch_permutation`) cut into global batches of
    ``batch_size`` images (the remainder of an epoch is dropped); iteration ``i`` takes global batch ``i``. Of
    it, micro-step ``a`` (of ``accumulation``) takes ``batch_size / accumulation`` images, of which process
    ``rank`` takes its ``batch_size / (accumulation x world_size)``. The images of an iteration, and each image's
    augmentation (seeded by `sample_seed` from its position), are thus the same for any number of processes,
    accumulation steps, loader workers or restarts."""

    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        seed: int,
        start: int = 0,
        accumulation: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.per_device = per_device_batch(batch_size, world_size, accumulation)  # per process per micro-step
        if size < batch_size:
            raise ReinError(f"the training set has {size} images, fewer than the batch size {batch_size}")
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start
        self.accumulation, self.rank, self.world_size = accumulation, rank, world_size
        self.iterations_per_epoch = size // batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, None
        for iteration in itertools.count(self.start):
            e, offset = divmod(iteration, self.iterations_per_epoch)
            if e != epoch:
                epoch, order = e, epoch_permutation(self.seed, e, self.size).tolist()
            for step in range(self.accumulation):
                first = offset * self.batch_size + (step * self.world_size + self.rank) * self.per_device
                for position in range(first, first + self.per_device):
                    yield order[position], sample_seed(self.seed, epoch, position)


class SeededItems(Dataset):
    """``dataset[index]`` with torch's random generator seeded by the sample's own seed: the draws of its
    transform depend on that seed alone, not on which loader worker reads it or what it read before.
    The caller's generator state is left as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def training_loader(dataset: Dataset, sampler: TrainingSampler, *, num_workers: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) micro-batches of ``sampler.per_device`` images, forever, in the sampler's order.

    The worker processes end with this process, even when it is killed (`rein_cli.parallel.end_with_parent`).
    The loader has its own generator, so creating it leaves torch's global generator untouched."""
    loader = DataLoader(
        SeededItems(dataset),
        batch_size=sampler.per_device,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(sampler.seed),
        collate_fn=_collate,
        worker_init_fn=functools.partial(_init_worker, os.getpid()) if num_workers > 0 else None,
    )
    return iter(loader)
