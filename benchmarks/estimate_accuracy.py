"""How far the label-free estimates land from the truth on the embedded benchmark, as JSON.

    python benchmarks/estimate_accuracy.py [--out rein-demo] [--iters 200]

Runs `rein demo` into ``--out`` (or reads the results.json an earlier demo left there): the demo's model is trained
on clear synthetic scenes and evaluated on fog, night, rain and snow with ``--estimate`` (calibrated on the clear
val split). For each condition and estimator prints the estimate, the measured figure (the labels are there) and
the absolute error in points; writes benchmarks/results/estimate_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from rein_cli.engine.results import RESULTS_FILE, read_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("rein-demo"), help="the demo's output folder")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (the demo's default: 200)")
    args = parser.parse_args()
    if not (args.out / RESULTS_FILE).is_file():
        from rein_cli.demo import run_demo

        run_demo(args.out, iters=args.iters, progress=False)
    results = read_results(args.out / RESULTS_FILE)
    rows, errors = [], {}
    for name, entry in results.datasets.items():
        for e in entry.estimates:
            truth = getattr(entry, e.metric)
            error = abs(e.value - truth)
            rows.append({"dataset": name, "metric": e.metric, "method": e.method, "estimate": round(e.value, 2),
                         "measured": round(truth, 2), "abs_error": round(error, 2)})  # fmt: skip
            errors.setdefault(f"{e.metric} {e.method}", []).append(error)
            print(f"{name:18s} {e.metric:5s} {e.method:18s} {e.value:7.2f} {truth:7.2f}  error {error:5.2f}")
    summary = {k: {"max": round(max(v), 2), "mean": round(sum(v) / len(v), 2)} for k, v in errors.items()}
    for key, s in summary.items():
        print(f"{key:26s} max error {s['max']:5.2f}  mean {s['mean']:5.2f}")
    import torch

    record = {
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": "python benchmarks/estimate_accuracy.py (rein demo, then its results.json)",
        "calibrated_on": results.calibrated_on,
        "split": results.split,
        "method": results.method,
        "backbone": results.backbone,
        "rows": rows,
        "summary": summary,
    }
    path = Path(__file__).parent / "results" / "estimate_accuracy.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


if __name__ == "__main__":
    main()
