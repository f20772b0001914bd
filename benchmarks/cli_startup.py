"""Start-up time of the command line: `rein --help` and `import rein_cli`, best of N runs, as JSON.

    python benchmarks/cli_startup.py [--runs 5]

Writes benchmarks/results/cli_startup.json. The target is under one second for `rein --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "rein --help": [sys.executable, "-m", "rein_cli", "--help"],
    "import rein_cli": [sys.executable, "-c", "import rein_cli"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json")
    args = parser.parse_args()
    results = {}
    for name, cmd in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        results[name] = {"best_s": round(min(times), 3), "median_s": round(sorted(times)[len(times) // 2], 3)}
        print(f"{name}: best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": "cli_startup", "runs": args.runs, "cpus": os.cpu_count(), "results": results}
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
