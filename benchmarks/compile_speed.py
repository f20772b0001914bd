"""What ``torch.compile`` (``train.compile``, ``--compile``) gives, as JSON: compiled against uncompiled.

    python benchmarks/compile_speed.py [--device cpu] [--backbone dinov2-s] [--batch 2] [--runs 3] [--cases step]

Random weights and generated images stand in for the real ones (the time does not depend on them).
For each of a training step (Rein, 512x512, ``--batch`` images: loss, backward, AdamW step) and whole-image
inference of one 512x512 image (`semantic_scores`, no gradients), uncompiled and compiled
(`rein_cli.engine.compile.compile_segmentor`, as the command line does): the first call (for the compiled model,
the compilation included) and the steady state (best and mean of ``--runs`` calls after it). Each case runs in a
process of its own with an empty Inductor cache (``TORCHINDUCTOR_CACHE_DIR``): the compile time is a first run's.

Writes benchmarks/results/compile_speed_<device>.json (or ``--out``), again after each case measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_name, sync

CASES = ("inference", "step")


def clock(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, case: str, compile_: bool) -> dict:
    """One case, compiled or not: the first call, then the best and mean of ``args.runs`` calls."""
    from rein_cli.engine.compile import compile_segmentor, is_compiled
    from rein_cli.engine.optim import build_optimizer
    from rein_cli.models.segmentor import build_segmentor

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_segmentor(args.backbone, method="rein", crop_size=512, pretrained=False).to(device)
    compiled = compile_segmentor(model, device) if compile_ else False
    generator = torch.Generator().manual_seed(0)
    if case == "step":
        model.train()
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
        images = torch.randn(args.batch, 3, 512, 512, generator=generator).to(device)
        labels = torch.randint(0, 19, (args.batch, 512, 512), generator=generator).to(device)
        labels[:, :64] = 255

        def run() -> None:
            loss = sum(model.training_loss(images, labels).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        model.eval()
        image = torch.randn(1, 3, 512, 512, generator=generator).to(device)

        def run() -> None:
            with torch.no_grad():
                model.semantic_scores(image)

    first = clock(run, device)
    times = [clock(run, device) for _ in range(args.runs)]
    return {
        "compiled": compiled and is_compiled(model),  # False: compiling was not possible or failed (see stderr)
        "first_call_s": round(first, 2),
        "best_s": round(min(times), 3),
        "mean_s": round(sum(times) / len(times), 3),
        "runs": args.runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="dinov2-s")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help="inference and/or step (comma list)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # a child process: CASE:compiled or CASE:eager
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if args.only:  # one case in a process of its own, with its own empty Inductor cache
        case, kind = args.only.split(":")
        print(json.dumps(measure(args, case, kind == "compiled")))
        return

    cases = [c for c in args.cases.split(",") if c]
    if not set(cases) <= set(CASES):
        parser.error(f"--cases: choose from {', '.join(CASES)}")
    device = torch.device(args.device)
    data = {
        "benchmark": "compile_speed",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "backbone": args.backbone,
        "method": "rein",
        "head": "mask2former",
        "batch": args.batch,
        "precision": "fp32",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": {},
    }
    out = args.out or Path(__file__).parent / "results" / f"compile_speed_{device.type}.json"
    for case in cases:
        result = data["results"][case] = {}
        for kind in ("eager", "compiled"):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                child = [sys.executable, __file__, *sys.argv[1:], "--only", f"{case}:{kind}"]
                done = subprocess.run(child, check=True, capture_output=True, text=True, env=env)
            result[kind] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{case} {kind}: {result[kind]}", flush=True)
        eager, compiled = result["eager"], result["compiled"]
        result["speedup"] = round(eager["best_s"] / compiled["best_s"], 3)
        saved = eager["best_s"] - compiled["best_s"]
        extra = compiled["first_call_s"] - eager["first_call_s"]
        result["calls_to_repay_compile"] = round(extra / saved) if saved > 0 else None  # None: never
        save(data, out)


def save(data: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"saved {out}", flush=True)


if __name__ == "__main__":
    main()
