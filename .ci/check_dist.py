"""Compare a built wheel and sdist with the files git tracks: python .ci/check_dist.py WHEEL SDIST

The wheel must hold exactly `git ls-files rein_cli recipes` (recipes/ as rein_cli/recipes/) besides its
*.dist-info/ metadata. The sdist must hold every tracked file of rein_cli/, recipes/, tests/, docs/ and
benchmarks/, the top-level LICENSE, README.md, CHANGELOG.md and pyproject.toml, and nothing untracked
but its PKG-INFO. Any difference is listed and the exit status is 1.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile


def tracked(*paths: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--", *paths], check=True, capture_output=True, text=True).stdout
    return {name for name in out.split("\0") if name}


def differences(what: str, missing: set[str], extra: set[str]) -> bool:
    for label, names in (("missing", missing), ("extra (not tracked by git)", extra)):
        if names:
            print(f"{what}: {len(names)} {label} file(s):", file=sys.stderr)
            for name in sorted(names):
                print(f"  {name}", file=sys.stderr)
    return bool(missing or extra)


def check_wheel(path: str) -> bool:
    with zipfile.ZipFile(path) as wheel:
        names = {n for n in wheel.namelist() if not n.endswith("/") and not n.split("/")[0].endswith(".dist-info")}
    expected = {name if name.startswith("rein_cli/") else f"rein_cli/{name}" for name in tracked("rein_cli", "recipes")}
    failed = differences(f"wheel {path}", expected - names, names - expected)
    if not failed:
        print(f"wheel: {len(names)} files, exactly the tracked files of rein_cli/ and recipes/ (as rein_cli/recipes/)")
    return failed


def check_sdist(path: str) -> bool:
    with tarfile.open(path) as sdist:
        names = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile() and "/" in m.name}
    required = tracked("rein_cli", "recipes", "tests", "docs", "benchmarks")
    required |= {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"}
    extra = names - tracked() - {"PKG-INFO"}
    failed = differences(f"sdist {path}", required - names, extra)
    if not failed:
        print(f"sdist: {len(names)} files, all tracked files of rein_cli/ recipes/ tests/ docs/ benchmarks/, top level")
    return failed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[0])
    failed = check_wheel(sys.argv[1])
    failed = check_sdist(sys.argv[2]) or failed
    sys.exit(1 if failed else 0)
