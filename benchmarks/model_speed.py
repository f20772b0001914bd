"""Forward time of the Mask2Former head (ViT-L pyramid) and of whole models at 512x512, as JSON.

    python benchmarks/model_speed.py [--runs 3] [--device cpu] [--large]

Measures, with torch.no_grad and batch 1: the head alone on a DINOv2-L-shaped pyramid (1024 channels at
strides 4-32 of a 512x512 crop) with Rein queries, and `semantic_scores` of the whole DINOv2-S
model (frozen ViT-S + Rein + Mask2Former); with --large also DINOv2-L. Weights are random (the
time does not depend on them). Writes benchmarks/results/model_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from rein_cli.models.mask2former import Mask2FormerHead
from rein_cli.models.segmentor import build_segmentor


def timed(fn, runs: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"best_s": round(min(times), 3), "mean_s": round(sum(times) / len(times), 3), "runs": runs}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--large", action="store_true", help="also time the whole DINOv2-L model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    results = {}

    head = Mask2FormerHead([1024] * 4, 19).to(device).eval()
    pyramid = [torch.randn(1, 1024, 512 // s, 512 // s, device=device) for s in (4, 8, 16, 32)]
    queries = torch.randn(100, 256, device=device)
    results["mask2former_head_vit_l_pyramid_512"] = timed(lambda: head(pyramid, queries), args.runs)

    image = torch.randn(1, 3, 512, 512, device=device)
    names = ["dinov2-s"] + (["dinov2-l"] if args.large else [])
    for name in names:
        model = build_segmentor(name, crop_size=512).to(device).eval()
        results[f"{name}_rein_mask2former_512"] = timed(lambda m=model: m.semantic_scores(image), args.runs)

    for key, value in results.items():
        print(f"{key}: best {value['best_s']:.3f} s, mean {value['mean_s']:.3f} s over {value['runs']} runs")
    data = {
        "benchmark": "model_speed",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"model_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
