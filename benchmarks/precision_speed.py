"""Inference in fp32 against bf16 autocast: time, label agreement and score difference, as JSON.

    python benchmarks/precision_speed.py [--runs 3] [--device cpu] [--backbone dinov2-s] [--threads N]

The model is `build_segmentor(BACKBONE, method="rein", crop_size=512, pretrained=False)` (frozen ViT + Rein +
Mask2Former, random weights, seeded), on a synthetic street scene (`rein_cli.data.synthetic`) normalised as an
evaluation does. For whole 512x512 inference and slide inference of a 1024x512 image (windows of 512, stride 341),
`rein_cli.engine.inference.infer` is timed (best of ``--runs`` after a warm-up) in fp32 and under bf16 autocast, and
the two compared: the share of pixels whose argmax label agrees, and max|a - b| / max|a| of the scores. Also says
whether the device has native bf16 (`rein_cli.engine.precision`) and what ``auto`` picks there.
Writes benchmarks/results/precision_speed_<device>.json. On a shared machine the times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from rein_cli.data.synthetic.scene import make_scene
from rein_cli.data.synthetic.weather import render
from rein_cli.engine.inference import infer
from rein_cli.engine.precision import inference_precision
from rein_cli.models.segmentor import build_segmentor


def scene(model: torch.nn.Module, width: int, height: int, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W): a clear synthetic street scene, normalised with the model's mean and std."""
    rng = np.random.default_rng(0)
    rgb = render(make_scene(rng, width=width, height=height), "clear", rng)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(model.mean).view(3, 1, 1), torch.tensor(model.std).view(3, 1, 1)
    return ((x - mean) / std)[None].to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, runs: int, device: torch.device) -> tuple[torch.Tensor, list[float]]:
    out = fn()  # warm-up
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return out, times


def compare(model, image: torch.Tensor, mode: str, runs: int, device: torch.device) -> dict:
    """fp32 and bf16 of one inference: times, label agreement, score difference."""
    results, scores = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        call = lambda d=dtype: infer(model, image, mode=mode, crop=model.crop_size, autocast=d)  # noqa: E731
        scores[name], times = timed(call, runs, device)
        results[f"{name}_best_s"] = round(min(times), 3)
        results[f"{name}_times_s"] = [round(t, 3) for t in times]
        print(f"  {mode} {tuple(image.shape[-2:])} {name}: best {min(times):.3f} s of {[round(t, 3) for t in times]}")
    a, b = scores["fp32"], scores["bf16"]
    assert b.dtype == torch.float32, b.dtype
    results["speedup"] = round(results["fp32_best_s"] / results["bf16_best_s"], 2)
    results["label_agreement"] = round((a.argmax(1) == b.argmax(1)).float().mean().item(), 5)
    results["fp32_classes_predicted"] = len(a.argmax(1).unique())  # agreement means little when one class wins
    results["score_rel_max_diff"] = round(((a - b).abs().max() / a.abs().max()).item(), 5)
    print(
        f"  speed-up {results['speedup']}x, labels agree on {100 * results['label_agreement']:.3f}% of pixels, "
        f"max|a-b|/max|a| = {results['score_rel_max_diff']:.4f} ({results['fp32_classes_predicted']} classes predicted)"
    )
    return results


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="dinov2-s")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_segmentor(args.backbone, method="rein", crop_size=512, pretrained=False).to(device).eval()
    auto = inference_precision("auto", device)
    print(f"{args.backbone}, {device}: auto -> {auto}")
    results = {
        "whole_512x512": compare(model, scene(model, 512, 512, device), "whole", args.runs, device),
        "slide_1024x512": compare(model, scene(model, 1024, 512, device), "slide", args.runs, device),
    }
    data = {
        "benchmark": "precision_speed",
        "model": f"{args.backbone} + rein + mask2former, crop 512, random weights",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "auto": auto.name,
        "auto_why": auto.why,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"precision_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
