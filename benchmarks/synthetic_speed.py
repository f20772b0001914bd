"""Generation speed of the embedded synthetic benchmark (images written per second), as JSON.

    python benchmarks/synthetic_speed.py [--train 200 --val 40 --width 512 --height 256 --workers N]

Counts every image file written (each condition of a validation scene is one image), plus the rate
for the clear training split alone. Writes benchmarks/results/synthetic_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rein_cli.data.synthetic import generate_synthetic


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic_speed.json")
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in {
            "clear_train_only": dict(num_train=args.train, num_val=1, conditions=("clear",)),
            "full_benchmark": dict(num_train=args.train, num_val=args.val),
        }.items():
            start = time.perf_counter()
            manifests = generate_synthetic(
                Path(tmp) / name, width=args.width, height=args.height, workers=args.workers, progress=False, **kwargs
            )
            seconds = time.perf_counter() - start
            images = sum(sum(json.loads(m.read_text())["counts"].values()) for m in manifests.values())
            runs[name] = {"images": images, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 1)}
            print(f"{name}: {images} images in {seconds:.1f} s = {images / seconds:.1f} images/s")
    result = {
        "benchmark": "synthetic_speed",
        "size": f"{args.width}x{args.height}",
        "workers": args.workers,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
