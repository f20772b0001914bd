"""This tree against another checkout of rein (e.g. the previous release): speed and outputs, on this machine, as JSON.

    git worktree add ../rein-base v0.x            # or any other checkout
    python benchmarks/compare_trees.py --base ../rein-base [--rounds 3] [--runs 2]

DINOv2-S + Rein + Mask2Former with random weights (the same in both trees: seed 0), fp32 on the CPU. Each round runs
one process per tree, alternating (base, this, base, this, ...), so that a change in the machine's load falls on
both; each process times, after a warm-up, the best of ``--runs``:

- whole-image inference at 512x512 (`semantic_scores`, batch 1);
- sliding-window inference of a 1024x512 image (3 windows of 512 at stride 341);
- a training step at batch 2 of 512x512 crops (the 30 losses, backward, AdamW);

and the first process of each tree saves its outputs: the scores of both inferences, the 30 loss terms (the same
random draws: seeded) and the gradient of every trainable parameter. The report gives each tree's best time over
its processes, this tree's time as a share of the base's, the FLOPs of each task (torch.utils.flop_counter) and
the rates reached beside this machine's fp32 and bf16 matrix-multiply rates, and the outputs compared with the
tolerances of an optimisation: scores within 1e-4 of their scale (max |a - b| / max |a|), each loss term within
1e-5 relative, gradients within 1e-4 of their scale, argmax labels identical on at least 99.99% of pixels.

Writes benchmarks/results/compare_trees.json (or ``--out``).
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

from _common import cpu_name, save_json

TASKS = ("whole_512x512", "slide_1024x512", "train_step_b2")
TOLERANCE = {"scores": 1e-4, "loss": 1e-5, "grad": 1e-4, "labels": 0.9999}


def child(out: Path, runs: int, save: bool) -> None:
    """In a process whose ``rein_cli`` is one tree: time each task and save its outputs."""
    import torch

    from rein_cli.engine.inference import infer
    from rein_cli.engine.optim import build_optimizer
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("dinov2-s", method="rein", crop_size=512, pretrained=False)
    generator = torch.Generator().manual_seed(0)
    whole = torch.randn(1, 3, 512, 512, generator=generator)
    wide = torch.randn(1, 3, 512, 1024, generator=generator)
    images = torch.randn(2, 3, 512, 512, generator=generator)
    labels = torch.randint(0, 19, (2, 512, 512), generator=generator)
    labels[:, :64] = 255  # ignored pixels, as in real crops
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)

    def best(work) -> float:
        work()  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    def step() -> None:
        losses = model.training_loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        times = {
            "whole_512x512": best(lambda: model.semantic_scores(whole)),
            "slide_1024x512": best(lambda: infer(model, wide, mode="slide", crop=512, stride=341)),
        }
    model.train()
    times["train_step_b2"] = best(step)
    result = {"times": times}
    if save:
        model.load_state_dict(state)  # the steps above changed the weights
        model.eval()
        with torch.no_grad():
            outputs = {"whole": model.semantic_scores(whole), "slide": infer(model, wide, mode="slide", crop=512)}
        model.train()
        torch.manual_seed(1)  # the losses' random points
        losses = model.training_loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        outputs |= {f"loss/{k}": v.detach() for k, v in losses.items()}
        outputs |= {f"grad/{k}": p.grad for k, p in model.named_parameters() if p.grad is not None}
        torch.save(outputs, out.with_suffix(".pt"))
    out.write_text(json.dumps(result))


def flops() -> dict[str, float]:
    """GFLOP of each task with this tree's code (torch.utils.flop_counter: matrix products and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rein_cli.engine.inference import infer
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("dinov2-s", method="rein", crop_size=512, pretrained=False)
    counts = {}
    for task, work in (
        ("whole_512x512", lambda: model.eval().semantic_scores(torch.randn(1, 3, 512, 512))),
        ("slide_1024x512", lambda: infer(model.eval(), torch.randn(1, 3, 512, 1024), mode="slide", crop=512)),
        (
            "train_step_b2",
            lambda: sum(
                model.train().training_loss(torch.randn(2, 3, 512, 512), torch.randint(0, 19, (2, 512, 512))).values()
            ).backward(),
        ),
    ):
        counter = FlopCounterMode(display=False)
        with counter, torch.set_grad_enabled(task == "train_step_b2"):
            work()
        counts[task] = counter.get_total_flops() / 1e9
    return counts


def matmul_rates() -> dict[str, float]:
    """This machine's matrix-multiply rate (GFLOP/s, 4096x1024 by 1024x4096, best of 5) in fp32 and bf16."""
    import torch

    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(4096, 1024, dtype=dtype), torch.randn(1024, 4096, dtype=dtype)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(5))
        rates[name] = 2 * 4096 * 1024 * 4096 / best / 1e9
    return rates


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def compare(base: dict, new: dict) -> dict:
    """The largest differences of ``new``'s outputs from ``base``'s, and whether each is within its tolerance."""

    def scale_error(a, b) -> float:
        return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))

    report: dict = {"scores": {}, "labels_identical": {}, "loss": {}, "grad": {}}
    for key in ("whole", "slide"):
        report["scores"][key] = scale_error(base[key], new[key])
        report["labels_identical"][key] = float((base[key].argmax(1) == new[key].argmax(1)).float().mean())
    losses = [k for k in base if k.startswith("loss/")]
    report["loss"] = {k[5:]: float(((base[k] - new[k]).abs() / base[k].abs().clamp_min(1e-30)).max()) for k in losses}
    grads = [k for k in base if k.startswith("grad/")]
    report["grad"] = {k[5:]: scale_error(base[k], new[k]) for k in grads}
    report["missing"] = sorted(set(base) ^ set(new))
    report["within_tolerance"] = (
        not report["missing"]
        and max(report["scores"].values()) <= TOLERANCE["scores"]
        and min(report["labels_identical"].values()) >= TOLERANCE["labels"]
        and max(report["loss"].values()) <= TOLERANCE["loss"]
        and max(report["grad"].values()) <= TOLERANCE["grad"]
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="another checkout of rein (its root folder)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree, interleaved")
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each task per process, after a warm-up")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.save)
        return

    here = Path(__file__).resolve().parents[1]
    trees = {"base": args.base.resolve(), "this": here}
    if not (trees["base"] / "rein_cli" / "__init__.py").is_file():
        sys.exit(f"error: {args.base} is not a checkout of rein (no rein_cli/__init__.py); give its root folder")
    times: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                out = Path(tmp) / f"{name}-{round_}.json"
                command = [sys.executable, __file__, "--base", str(args.base), "--child", str(out)]
                command += ["--runs", str(args.runs)] + (["--save"] if round_ == 0 else [])
                env = {**os.environ, "PYTHONPATH": str(tree)}
                subprocess.run(command, check=True, env=env, cwd=tree)
                times[name].append(json.loads(out.read_text())["times"])
                print(f"round {round_ + 1} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times[name][-1].items()))
        import torch

        outputs = {name: torch.load(Path(tmp) / f"{name}-0.pt") for name in trees}
    best = {name: {task: min(t[task] for t in runs) for task in TASKS} for name, runs in times.items()}
    gflop = flops()
    rates = matmul_rates()
    tasks = {
        task: {
            "base_s": round(best["base"][task], 3),
            "this_s": round(best["this"][task], 3),
            "ratio": round(best["this"][task] / best["base"][task], 3),
            "gflop": round(gflop[task], 1),
            "gflop_per_s": round(gflop[task] / best["this"][task], 1),
        }
        for task in TASKS
    }
    outputs_report = compare(outputs["base"], outputs["this"])
    for task, row in tasks.items():
        print(
            f"{task}: {row['base_s']} s -> {row['this_s']} s ({row['ratio']}x), {row['gflop']} GFLOP, "
            f"{row['gflop_per_s']} GFLOP/s"
        )
    print(f"matrix multiply here: fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s")
    print(
        f"outputs within tolerance: {outputs_report['within_tolerance']} (scores {outputs_report['scores']}, labels "
        f"{outputs_report['labels_identical']}, worst loss {max(outputs_report['loss'].values()):.2e}, worst "
        f"gradient {max(outputs_report['grad'].values()):.2e})"
    )
    data = {
        "benchmark": "compare_trees",
        "base": _commit(trees["base"]),
        "this": _commit(here),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "runs": args.runs,
        "tasks": tasks,
        "times": times,
        "matmul_gflop_per_s": {k: round(v, 1) for k, v in rates.items()},
        "outputs": outputs_report,
        "tolerance": TOLERANCE,
    }
    out = args.out or here / "benchmarks" / "results" / "compare_trees.json"
    save_json(out, data)
    print(f"saved {out}")


def _commit(tree: Path) -> str:
    """The tree's commit (and "+changes" when it has uncommitted ones), or "unknown" outside git."""
    try:
        git = ["git", "-C", str(tree)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "rein_cli"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if commit.returncode == 0 else "unknown"


if __name__ == "__main__":
    main()
