"""What a documented command or snippet that ran must have printed, written or defined."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .helpers import TINY_SETS


def expect(path: str, params: dict[str, Any], out: str, cwd: Path, home: Path) -> None:
    """What a documented command that ran must have printed and written."""
    from rein_cli.data.registry import find_spec

    if path == "rein":
        assert "Usage: rein" in out and "train" in out and "data" in out
    elif path == "rein models":
        assert "rein-dinov2-l-gta" in out and "dinov2-l" in out
    elif path == "rein data list":
        assert "cityscapes (citys)" in out and re.search(r"^synthetic\s.*train 8", out, re.MULTILINE)
    elif path == "rein data info":
        assert out.startswith(f"{find_spec(params['name']).name}: ") and "  prepared: " in out
    elif path == "rein data verify":
        assert out.rstrip().endswith(": ok")
    elif path == "rein data prepare":
        manifest = Path(re.search(r"^prepared .+ -> (.+manifest\.json)$", out, re.MULTILINE)[1])
        name = params["custom_name"] or find_spec(params["name"]).name
        assert manifest == home / "datasets" / name / "manifest.json" and manifest.is_file()
    elif path == "rein train" and params["list_"]:
        assert re.search(r"^gta-dinov2-l: .*\n    dinov2-l  gta5 -> ", out, re.MULTILINE)
        assert not list(cwd.iterdir())  # listing trains nothing
    elif path == "rein train":
        run = cwd / re.search(r"^run directory: (.+)$", out, re.MULTILINE)[1]
        assert params["out"] is None or run == cwd / params["out"]
        assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
        config = yaml.safe_load((run / "config.yaml").read_text())
        for key, value in documented_settings(params).items():
            section, expected = config, as_configured(key, value)
            for part in key.split("."):
                section = section[part]
            assert section == expected, f"{key} is {section} in the run's config.yaml, not {expected}"
        assert not config["data"]["eval"] or (run / "eval" / "results.json").is_file()
    elif path == "rein eval":
        written = Path(re.search(r"^results: (.+)$", out, re.MULTILINE)[1])
        assert written.resolve().is_relative_to(cwd.resolve())  # beside the (copied) checkpoint, or here
        results = json.loads(written.read_text())
        targets = [t for value in params["targets"] for t in value.split(",")]
        if params["corruption"]:  # one entry per target, corruption and severity
            from rein_cli.data.corruptions import parse_spec

            targets = [(t, pair) for t in targets for pair in parse_spec(params["corruption"])]
        if params["estimate"]:  # the calibration dataset evaluated too; each other target estimated, labels or not
            calibrated = results["calibrated_on"]
            assert len(results["datasets"]) == len(targets) + (calibrated not in targets)
            assert "mIoU" in results["datasets"][calibrated] and "Estimated without labels" in out
            assert all(r.get("estimates") for name, r in results["datasets"].items() if name != calibrated)
        else:
            assert len(results["datasets"]) == len(targets)
            assert all("mIoU" in r for r in results["datasets"].values())
    elif path == "rein predict":
        count, folder = re.search(r"^(\d+) images segmented into (.+)/ ", out, re.MULTILINE).groups()
        images = [p for name in map(Path, params["inputs"]) for p in ([name] if name.is_file() else name.iterdir())]
        assert int(count) == len(images) == len(list((cwd / folder / "labels").glob("*.png")))
    elif path == "rein compare":
        written = re.search(r"^written: (.+)$", out, re.MULTILINE)[1].split(", ")
        assert [Path(p).name for p in written] == ["compare.md", "compare.csv", "compare.png"]
        assert all((cwd / p).is_file() for p in written)
        labels = list(dict.fromkeys(name.split("=", 1)[0] for name in params["inputs"] if "=" in name))
        rows = [line.split(",", 1)[0] for line in (cwd / written[1]).read_text().splitlines()[1:]]
        assert not labels or rows == labels, f"rows {rows}, not the labels {labels}"
    else:
        raise AssertionError(f"say what `{path}` must print or write")


def as_configured(key: str, value: Any) -> Any:
    """A documented value as config.yaml holds it (one dataset name where a list is expected: a list of one)."""
    from rein_cli.config import config_from_dict

    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    section = config_from_dict(nested).to_dict()
    for part in key.split("."):
        section = section[part]
    return section


def documented_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The configuration values a documented `rein train` sets that the test-sized options leave alone."""
    from rein_cli.config import parse_override

    flags = {"model.backbone": params["backbone"], "model.method": params["method"], "model.head": params["head"]}
    flags |= {"data.train": params["data"]}
    settings = {k: v for k, v in flags.items() if v is not None}
    settings |= {".".join(key): value for key, value in map(parse_override, params["sets"] or [])}
    overridden = {s.split("=", 1)[0] for s in TINY_SETS}
    return {k: v for k, v in settings.items() if k not in overridden}


def snippet_checks(code: str, names: dict[str, Any]) -> None:
    """What the snippets' comments promise."""
    if "generate_synthetic(" in code:
        assert names["manifests"]["synthetic"] == Path("data/synthetic/manifest.json")
        assert len(names["manifests"]) == 5 and all(p.is_file() for p in names["manifests"].values())
    if "make_scene(" in code:
        assert names["scene"].labels.shape == (256, 512) and names["fog"].shape == (256, 512, 3)
    if "load_segmentor(" in code:
        assert names["model"].classes[0] == "road" and names["model"].config.backbone == "vit-tiny"
    if "rein_cli.evaluate(" in code:
        results = names["results"]
        assert list(results.datasets) == ["synthetic-fog", "synthetic-night"] and results.trained_on == ["synthetic"]
        assert results.mean_of == ["synthetic-fog", "synthetic-night"] and Path("eval-s/report.md").is_file()
    if "semantic_scores(" in code:
        assert names["scores"].shape[:2] == (1, 19) and names["losses"]
