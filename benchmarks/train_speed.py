"""Training and evaluation speed at paper scale, as JSON: one script for a CPU or one GPU.

    python benchmarks/train_speed.py [--device cpu] [--backbone dinov2-s] [--batch 2] [--runs 3]
    python benchmarks/train_speed.py --device cuda --backbone dinov2-l --batch 4 --precision bf16 --checkpointing

Random weights and generated images stand in for the real ones (the time does not depend on them).

1. step: one training iteration (loss, backward, AdamW step) at 512x512 for each method, Rein, frozen
   (head only) and full fine-tuning, on the same model; seconds (best and mean of ``--runs`` after a warm-up)
   and peak memory (CUDA: the allocator's peak; CPU: the peak resident size of a process that measures
   that method alone).
2. inference: `semantic_scores` of one 512x512 image (whole) and sliding-window inference of one 1024x512
   image (3 windows of 512 at stride 341); images per second.
3. evaluation: `rein_cli.engine.evaluate.evaluate` on generated 1024x512 images (slide mode); the share of
   the time spent outside the model's forward passes (decoding, resizing, confusion matrices, bookkeeping).

Writes benchmarks/results/train_speed_<device>.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, save_json, sync
from PIL import Image

METHODS = ("rein", "frozen", "full")


def timed(fn, runs: int, device: torch.device) -> dict:
    fn()  # warm-up: allocations, kernels, caches
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"best_s": round(min(times), 3), "mean_s": round(sum(times) / len(times), 3), "runs": runs}


def build(args: argparse.Namespace, method: str, device: torch.device):
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor(args.backbone, method=method, crop_size=512, pretrained=False)
    if args.checkpointing:
        model.backbone.checkpointing = True  # each block with its Rein step recomputed in the backward pass
    return model.to(device)


def measure_step(args: argparse.Namespace, method: str) -> dict:
    """One method's training step: time and peak memory."""
    from rein_cli.engine.optim import build_optimizer

    device = torch.device(args.device)
    model = build(args, method, device).train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 512, 512, generator=generator).to(device)
    labels = torch.randint(0, 19, (args.batch, 512, 512), generator=generator).to(device)
    labels[:, :64] = 255  # some ignored pixels, as in real crops
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> None:
        with autocast:
            losses = model.training_loss(images, labels)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = timed(step, args.runs, device)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    else:
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # KiB on Linux
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {**result, "trainable_parameters": trainable}


def measure_inference(args: argparse.Namespace) -> dict:
    from rein_cli.engine.inference import infer

    device = torch.device(args.device)
    model = build(args, "rein", device).eval()
    whole = torch.randn(1, 3, 512, 512, device=device)
    wide = torch.randn(1, 3, 512, 1024, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        results = {
            "whole_512x512": timed(lambda: model.semantic_scores(whole), args.runs, device),
            "slide_1024x512": timed(lambda: infer(model, wide, mode="slide", crop=512, stride=341), args.runs, device),
        }
    for value in results.values():
        value["images_per_s"] = round(1 / value["best_s"], 2)
    return results


def measure_evaluation(args: argparse.Namespace) -> dict:
    """Evaluate on generated 1024x512 images; the time outside the model's forward passes, as a share."""
    from rein_cli.data.custom import prepare_custom
    from rein_cli.engine.evaluate import evaluate

    device = torch.device(args.device)
    model = build(args, "rein", device).eval()
    forward_time = 0.0
    semantic_scores = model.semantic_scores

    def timed_scores(images: torch.Tensor) -> torch.Tensor:
        nonlocal forward_time
        sync(device)
        start = time.perf_counter()
        out = semantic_scores(images)
        sync(device)
        forward_time += time.perf_counter() - start
        return out

    model.semantic_scores = timed_scores
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared = Path(tmp) / "source", Path(tmp) / "bench"
        rng = np.random.default_rng(0)
        for split, n in (("train", 1), ("val", args.eval_images)):
            (source / "images" / split).mkdir(parents=True)
            (source / "masks" / split).mkdir(parents=True)
            for i in range(n):
                small = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
                Image.fromarray(small).resize((1024, 512), Image.BILINEAR).save(source / "images" / split / f"{i}.png")
                ids = np.kron(rng.integers(0, 19, (16, 32)), np.ones((32, 32), dtype=np.int64)).astype(np.uint8)
                Image.fromarray(ids).save(source / "masks" / split / f"{i}.png")
        (source / "classes.yaml").write_text("classes: [" + ", ".join(f"c{i}" for i in range(19)) + "]\n")
        prepare_custom(source, "bench", prepared, progress=False)
        start = time.perf_counter()
        evaluate(model, [str(prepared)], data_dir=Path(tmp), mode="slide", progress=False)
        sync(device)
        total = time.perf_counter() - start
    return {
        "images": args.eval_images,
        "total_s": round(total, 3),
        "forward_s": round(forward_time, 3),
        "overhead_share": round((total - forward_time) / total, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="dinov2-s")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--eval-images", type=int, default=6)
    parser.add_argument("--only", choices=("step", "inference", "evaluation", *METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(True)

    if args.only in METHODS:  # a child process: one method, so that its peak memory is its own
        print(json.dumps(measure_step(args, args.only)))
        return

    results: dict = {"step": {}}
    for method in METHODS:
        child = [sys.executable, __file__, *sys.argv[1:], "--only", method]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        results["step"][method] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"step {method}: {results['step'][method]}", flush=True)
    results["inference"] = measure_inference(args)
    print(f"inference: {results['inference']}", flush=True)
    results["evaluation"] = measure_evaluation(args)
    print(f"evaluation: {results['evaluation']}", flush=True)

    device = torch.device(args.device)
    data = {
        "benchmark": "train_speed",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "backbone": args.backbone,
        "batch": args.batch,
        "precision": args.precision,
        "checkpointing": args.checkpointing,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"train_speed_{device.type}.json"
    save_json(out, data)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
