"""Data speed, as JSON: label conversion during `prepare` and the training loader, on full-size fakes.

    python benchmarks/data_speed.py [--pairs 48] [--samples 40] [--workers N]

1. prepare: a Cityscapes-layout folder of 2048x1024 images and label-id maps (random blocks), prepared
   with every check (full decode of images and labels, pairing, sizes, values) and the table lookup; pairs
   per second.
2. loader: the official training pipeline (short-edge resize, 512 crop with cat_max_ratio, flip,
   photometric distortion, normalisation) on those 2048x1024 images, one process; samples per second
   per data-loader worker. Writes benchmarks/results/data_speed.json.

Each step also records its CPU seconds (this process and its finished worker processes), which other load on
the machine changes less than the wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.prepare import prepare
from rein_cli.data.transforms import TrainTransform


def make_cityscapes(root: Path, pairs: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(pairs):
        city = f"city{i % 3}"
        stem = f"{city}_000000_{i:06d}"
        split = "train" if i % 8 else "val"
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)  # smooth-ish content, like a photo compresses
        Image.fromarray(small).resize((2048, 1024), Image.BILINEAR).save(image, compress_level=1)
        ids = np.kron(rng.integers(0, 34, (32, 64)), np.ones((32, 32), dtype=np.int64)).astype(np.uint8)
        Image.fromarray(ids).save(label)


def cpu_seconds() -> float:
    """CPU time of this process and of its worker processes that have finished."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_speed.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "cityscapes"
        make_cityscapes(source, args.pairs)
        start, cpu = time.perf_counter(), cpu_seconds()
        manifest = prepare("cityscapes", [source], Path(tmp) / "prepared", workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        results["prepare_cityscapes_2048x1024"] = {
            "pairs": args.pairs,
            "workers": args.workers,
            "seconds": round(seconds, 2),
            "pairs_per_s": round(args.pairs / seconds, 1),
            "cpu_ms_per_pair": round(1000 * (cpu_seconds() - cpu) / args.pairs, 1),
        }
        transform = TrainTransform(
            512, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), resize_ratios=[k / 10 for k in range(5, 21)]
        )
        data = SegmentationDataset(manifest, "train", transform)
        torch.manual_seed(0)
        data[0]  # warm-up
        start, cpu = time.perf_counter(), cpu_seconds()
        for i in range(args.samples):
            data[i % len(data)]
        seconds = time.perf_counter() - start
        results["loader_512_crops_from_2048x1024"] = {
            "samples": args.samples,
            "seconds": round(seconds, 2),
            "samples_per_s_per_worker": round(args.samples / seconds, 1),
            "cpu_ms_per_sample": round(1000 * (cpu_seconds() - cpu) / args.samples, 1),
        }
    for key, value in results.items():
        print(key, value)
    data = {
        "benchmark": "data_speed",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
