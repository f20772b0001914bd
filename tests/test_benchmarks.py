"""benchmarks/gpu.py: its CPU path on a tiny model writes every part of the GPU run's JSON with sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT, checkout_env


def run_gpu_benchmark(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = checkout_env()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny", "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_gpu_benchmark_tiny_cpu_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = run_gpu_benchmark(out)
    assert "scores vs cpu: PASS" in done.stdout and f"saved {out}" in done.stdout
    assert not out.with_name(out.name + ".tmp").exists()  # written through a temporary file, renamed
    data = json.loads(out.read_text())
    assert data["benchmark"] == "gpu" and data["tiny"] is True and data["backbone"] == "vit-tiny"
    results = data["results"]
    assert set(results) >= {"train", "scores_vs_cpu", "eval", "predict", "targets"}

    for name in ("fp32", "bf16", "bf16_checkpointing"):
        entry = results["train"][name]
        assert entry["median_s"] > 0 and entry["best_s"] > 0 and entry["runs"] >= 1, entry
        assert entry["peak_rss_gb_process"] > 0
    assert results["train"]["bf16_checkpointing"]["checkpointing"] is True

    check = results["scores_vs_cpu"]
    assert check["reference"] == "cpu float64" and check["pass"] is True
    assert 0 <= check["strict_fp32"]["relative"] <= 1e-3 and check["strict_fp32"]["max_abs"] > 0

    sizes = {"cityscapes": [64, 128, 128, 256], "cityscapes_native": [128, 256, 128, 256], "bdd100k": [54, 96, 54, 96]}
    for key, size in sizes.items():
        entry = results["eval"][key]
        assert entry["size_hxw"] + entry["label_size_hxw"] == size and entry["crop"] == 64 and entry["stride"] == 43
        for precision in ("fp32", "bf16"):
            assert entry[precision]["images_per_s"] > 0 and entry[precision]["median_s"] > 0
        assert 0 <= entry["bf16_label_agreement"] <= 1 and entry["agreement_images"] == 1
    ips = results["eval"]["cityscapes"]["fp32"]["images_per_s"]
    assert abs(results["eval"]["cityscapes_val_seconds_fp32"] - 500 / ips) <= 0.05 + 1e-3 * 500 / ips
    native = results["eval"]["cityscapes_native"]["bf16"]["images_per_s"]
    assert abs(results["eval"]["cityscapes_val_seconds_bf16_native"] - 500 / native) <= 0.05 + 1e-3 * 500 / native

    assert results["predict"]["images"] == 2 and results["predict"]["images_per_s"] > 0
    targets = results["targets"]
    assert targets["applies"] is False  # a tiny model on a CPU is not the setting the targets are for
    assert targets["train_fp32"]["target_s"] == 0.12 and targets["train_fp32"]["target_gb"] == 6.0
    assert targets["cityscapes_val_fp32"]["target_s"] == 20.0


def test_gpu_benchmark_skips_what_its_time_budget_has_no_room_for(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run_gpu_benchmark(out, "--budget", "0")
    results = json.loads(out.read_text())["results"]
    for name in ("train", "scores_vs_cpu", "eval", "predict"):
        assert results[name]["skipped"] == "the time budget of 0 s was spent", results[name]
    assert results["targets"] == {"applies": False}  # no figure, nothing checked against a target
