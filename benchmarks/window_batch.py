"""Slide inference of one 1280x720 image (BDD100K's test size) at crop 512: one window per model call against
batched windows, as JSON.

    python benchmarks/window_batch.py [--runs 2] [--device cpu] [--batches 1,auto,4]

The model is DINOv2-S + Rein + Mask2Former with random weights (the time does not depend on them); the image has
8 windows at stride 341. Each window batch (``auto``: what `rein eval` chooses on the device,
`rein_cli.engine.inference.auto_window_batch`) is timed with torch.no_grad, after a warm-up run, the runs
interleaved so that a busy moment of the machine falls on all of them; also the largest difference of its scores
from one window at a time, relative to their scale. Writes benchmarks/results/window_batch_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from rein_cli.engine.inference import auto_window_batch, infer, slide_windows
from rein_cli.models.segmentor import build_segmentor

CROP, STRIDE, SIZE = 512, 341, (720, 1280)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,auto", help="window batches to time, comma-separated (auto too)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_segmentor("dinov2-s", method="rein", crop_size=CROP, pretrained=False).to(device).eval()
    image = torch.randn(1, 3, *SIZE, device=device)
    auto = auto_window_batch(model, (CROP, CROP), device)
    batches = {b: auto if b == "auto" else int(b) for b in args.batches.split(",")}

    def run(n: int) -> torch.Tensor:
        return infer(model, image, mode="slide", crop=CROP, stride=STRIDE, window_batch=n)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    reference = run(1)  # also the warm-up
    scores = {name: reference if n == 1 else run(n) for name, n in batches.items()}  # each one's warm-up
    times: dict[str, list[float]] = {name: [] for name in batches}
    for _ in range(args.runs):
        for name, n in batches.items():
            sync()
            start = time.perf_counter()
            run(n)
            sync()
            times[name].append(time.perf_counter() - start)
    windows = len(slide_windows(*SIZE, CROP, STRIDE))
    results = {}
    for name, n in batches.items():
        best = min(times[name])
        diff = float((scores[name] - reference).abs().max() / reference.abs().max())
        results[f"window_batch_{name}"] = {
            "window_batch": n,
            "best_s": round(best, 3),
            "mean_s": round(sum(times[name]) / len(times[name]), 3),
            "per_window_s": round(best / windows, 3),
            "runs": args.runs,
            "max_rel_diff_vs_one_window": diff,
        }
        print(
            f"window batch {name} ({n}): best {best:.3f} s per image ({best / windows:.3f} s per window), "
            f"scores within {diff:.1e} of one window at a time"
        )
    data = {
        "benchmark": "window_batch",
        "image": f"{SIZE[1]}x{SIZE[0]}, crop {CROP}, stride {STRIDE}, {windows} windows",
        "model": "dinov2-s + rein + mask2former, random weights",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"window_batch_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
