"""How close `rein eval`'s CPU time estimate comes to the time the evaluation then takes, as JSON.

    python benchmarks/cpu_estimate.py [--images 20] [--case NAME ...]

For each case a random-weight checkpoint is saved in a temporary folder (WORK) and `rein eval` runs on it from the
command line (a subprocess, offline, on the CPU) on synthetic scenes of 512x256 (``--images`` val scenes per
condition). The estimate is read from the line the command prints ("on the CPU this takes about ..."); measured is
the time from that line to the end of the command (what the estimate promises), command the whole command. The
promise: every estimate within 2x of the measured time. The machine's load average is recorded before and after
each case: on a shared machine the time a case takes follows what else runs. Prints one line per case; writes
benchmarks/results/cpu_estimate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = {  # the tests' tiny model (tests/helpers.py TINY_SETS)
    "model.backbone": "vit-tiny",
    "model.crop_size": 64,
    "model.head": "fpn",
    "model.head_channels": 16,
    "model.feature_indices": [0, 1, 2, 3],
    "model.backbone_kwargs": {"depth": 4, "embed_dim": 32, "num_heads": 2},
}
CORRUPTIONS = "gaussian_noise:3,glass_blur:1,fog:2"  # a fast, a slow (cached) and an overlay corruption
# name -> (recipe, config flags, `rein eval` options); weights are random (the time does not depend on them)
CASES = {
    "tiny slide": (None, TINY, ["--target", "synthetic-fog", "--mode", "slide"]),
    "vit-tiny demo whole": ("demo", {}, ["--target", "synthetic,synthetic-fog", "--mode", "whole"]),
    "vit-tiny demo slide": ("demo", {}, ["--target", "synthetic,synthetic-fog", "--mode", "slide"]),
    "vit-tiny demo slide flip": ("demo", {}, ["--target", "synthetic-night", "--mode", "slide", "--flip"]),
    "vit-tiny demo corruptions": (
        "demo",
        {},
        ["--target", "synthetic", "--mode", "whole", "--corruption", CORRUPTIONS],
    ),
    "dinov2-s demo whole": ("demo-dinov2-s", {}, ["--target", "synthetic,synthetic-rain", "--mode", "whole"]),
    "dinov2-s demo slide": ("demo-dinov2-s", {}, ["--target", "synthetic-snow", "--mode", "slide"]),
    "dinov2-s mask2former 512 slide": (None, {"model.backbone": "dinov2-s"}, ["--target", "synthetic-fog"]),
}
ESTIMATE = re.compile(r"on the CPU this takes about (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="val scenes per synthetic condition")
    parser.add_argument("--case", action="append", choices=list(CASES), help="only these cases (repeatable)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rein-cpu-estimate-") as tmp:
        work = Path(tmp)
        data = work / "data"
        from rein_cli.data.synthetic import generate_synthetic

        generate_synthetic(data, num_train=4, num_val=args.images, workers=1, progress=False)
        for name in args.case or CASES:
            recipe, flags, options = CASES[name]
            checkpoint = save_random_checkpoint(recipe, flags, work / "checkpoints" / name.replace(" ", "-"))
            command = ["rein", "eval", str(checkpoint), *options, "--data-root", str(data), "--device", "cpu"]
            row = run(command, work / "out" / name.replace(" ", "-"), work / "home")
            row["command"] = row["command"].replace(str(work), "WORK")  # the temporary folder, by its role
            row |= {"case": name, "recipe": recipe, "flags": flags}
            rows.append(row)
            print(
                f"{name:32s} estimate {row['estimate_s']:7.1f} s  measured {row['measured_s']:7.1f} s  "
                f"ratio {row['ratio']:.2f}  (command {row['command_s']:.1f} s, load {row['load_before']:.1f})"
            )
    import torch

    record = {
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": "python " + " ".join(["benchmarks/cpu_estimate.py", *sys.argv[1:]]),
        "images_per_condition": args.images,
        "promise": "estimate within 2x of measured (0.5 <= ratio <= 2)",
        "within_2x": all(0.5 <= r["ratio"] <= 2 for r in rows),
        "rows": rows,
    }
    path = Path(__file__).parent / "results" / "cpu_estimate.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"within 2x: {record['within_2x']}; written: {path}")


def save_random_checkpoint(recipe: str | None, flags: dict, folder: Path) -> Path:
    """A checkpoint of the model ``recipe`` and ``flags`` describe, with random weights (Cityscapes classes)."""
    import torch

    from rein_cli.config import load_config
    from rein_cli.engine.checkpoint import save_checkpoint
    from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from rein_cli.models.segmentor import build_segmentor

    cfg = load_config(recipe, **flags, **{"model.pretrained": False})
    torch.manual_seed(0)
    model = build_segmentor(cfg.model, classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE)
    save_checkpoint(model, folder, info={"training_datasets": ["synthetic"]})
    return folder


def run(command: list[str], out: Path, home: Path) -> dict:
    """``command`` (``rein ...``) in a subprocess: the estimate it printed, the time from that line to its end,
    and its whole time."""
    env = os.environ | {"REIN_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [sys.executable, "-m", "rein_cli", *command[1:], "--out", str(out), "--no-progress"]
    load = os.getloadavg()[0]
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    printed, line = None, ""
    for text in process.stderr:
        if printed is None and ESTIMATE.search(text):
            printed, line = time.monotonic(), text.strip()
    process.wait()
    end = time.monotonic()
    if process.returncode != 0 or printed is None:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}) or printed no estimate")
    hours, minutes, seconds = (int(v or 0) for v in ESTIMATE.search(line).groups())
    estimate = hours * 3600 + minutes * 60 + seconds
    measured = end - printed
    return {
        "command": " ".join(command),
        "estimate_line": line,
        "estimate_s": estimate,
        "measured_s": round(measured, 1),
        "command_s": round(end - start, 1),
        "ratio": round(estimate / measured, 2),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


if __name__ == "__main__":
    main()
