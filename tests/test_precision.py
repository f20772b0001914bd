"""Inference precision (eval.precision, --precision): bf16 autocast where the device has native bf16, float32 scores
either way, what ran said and recorded; the capability check mocked both ways."""

from __future__ import annotations

import json
import logging
import platform
import shutil

import numpy as np
import pytest
import torch

from rein_cli.engine import precision
from rein_cli.engine.inference import infer
from rein_cli.engine.precision import inference_precision
from rein_cli.engine.results import read_results
from rein_cli.errors import ReinError

from .helpers import errors, rein, sets, tiny_segmentor

CPU = torch.device("cpu")
NATIVE = "precision: bf16 autocast (the CPU has native bf16)"
NOT_NATIVE = "precision: fp32 (bf16 was asked for, but the CPU has no native bf16, so fp32 is faster)"


@pytest.fixture
def native(monkeypatch):
    """Set whether the CPU has native bf16 (True, False, or None: rein cannot tell)."""

    def set_(value: bool | None, auto_bf16: bool = True) -> None:
        monkeypatch.setattr(precision, "cpu_native_bf16", lambda: value)
        monkeypatch.setattr(precision, "CPU_AUTO_BF16", auto_bf16)

    return set_


def val_images(synthetic_root) -> list:
    """The clear synthetic val scenes' image files."""
    from rein_cli.data.manifest import read_manifest

    manifest = read_manifest(synthetic_root / "synthetic")
    return [manifest.root / item["image"] for item in manifest.splits["val"]]


def scene_batch(model, synthetic_root, count: int = 2) -> torch.Tensor:
    """(count, 3, 64, 128): synthetic val scenes, normalised as an evaluation does."""
    from PIL import Image

    images = val_images(synthetic_root)[:count]
    mean, std = torch.tensor(model.mean).view(3, 1, 1), torch.tensor(model.std).view(3, 1, 1)
    rgb = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in images]
    return torch.stack([(x.float() / 255 - mean) / std for x in rgb])


@pytest.mark.parametrize("head", ["fpn", "mask2former"])
@pytest.mark.parametrize("mode, flip", [("whole", False), ("slide", True)])
def test_bf16_scores_are_float32_and_agree_with_fp32(synthetic_root, head, mode, flip):
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    tiny = dict(backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2}, feature_indices=[0, 1, 2, 3])
    model = build_segmentor("vit-tiny", crop_size=64, head=head, head_channels=16, **tiny).eval()
    image = scene_batch(model, synthetic_root)
    fp32 = infer(model, image, mode=mode, crop=64, stride=43, flip=flip)
    bf16 = infer(model, image, mode=mode, crop=64, stride=43, flip=flip, autocast=torch.bfloat16)
    assert fp32.dtype == bf16.dtype == torch.float32 and bf16.shape == fp32.shape == (2, 19, 64, 128)
    assert not torch.equal(fp32, bf16)  # bf16 did run: the scores moved
    # within a few percent of their scale (a random model's flat Mask2Former scores: up to 6 %; bf16 keeps 8 bits)
    assert ((fp32 - bf16).abs().max() / fp32.abs().max()).item() < 0.1
    agree = (fp32.argmax(1) == bf16.argmax(1)).float().mean().item()
    assert agree >= 0.95, agree
    if head == "fpn":  # many classes (a random Mask2Former predicts one): the agreement means something
        assert fp32.argmax(1).unique().numel() >= 5
    assert not torch.is_autocast_enabled("cpu")  # left as it was


def test_the_capability_decides_and_says_so(native, monkeypatch):
    native(True)
    chosen = inference_precision("auto", CPU)
    assert (chosen.dtype, chosen.name, chosen.warn, str(chosen)) == (torch.bfloat16, "bf16", False, NATIVE)
    assert str(inference_precision("bf16", CPU)) == NATIVE
    assert str(inference_precision("fp32", CPU)) == "precision: fp32 (as asked)"
    native(True, auto_bf16=False)  # the one switch: auto keeps such CPUs in fp32, bf16 still asks for it
    assert str(inference_precision("auto", CPU)) == (
        "precision: fp32 (auto keeps the CPU in fp32; --precision bf16 uses its native bf16)"
    )
    assert inference_precision("bf16", CPU).dtype is torch.bfloat16
    native(False)
    assert str(inference_precision("auto", CPU)) == "precision: fp32 (the CPU has no native bf16)"
    asked = inference_precision("bf16", CPU)  # asked for where it is slow: fp32, with a warning
    assert (asked.dtype, asked.name, asked.warn, str(asked)) == (None, "fp32", True, NOT_NATIVE)
    native(None)  # arm64, Apple silicon: not known
    assert str(inference_precision("auto", CPU)) == (
        "precision: fp32 (rein cannot tell whether the CPU has native bf16; --precision bf16 tries)"
    )
    assert str(inference_precision("bf16", CPU)) == (
        "precision: bf16 autocast (as asked; rein cannot tell whether the CPU has native bf16)"
    )
    gpu = torch.device("cuda", 0)  # a GPU: its own check (no GPU needed to ask)
    monkeypatch.setattr(precision, "cuda_native_bf16", lambda device: True)
    assert str(inference_precision("auto", gpu)) == "precision: bf16 autocast (cuda:0 has native bf16)"
    monkeypatch.setattr(precision, "cuda_native_bf16", lambda device: False)
    assert str(inference_precision("auto", gpu)) == "precision: fp32 (cuda:0 has no native bf16)"
    assert inference_precision("bf16", gpu).warn
    with pytest.raises(ReinError) as err:
        inference_precision("bf17", CPU)
    assert str(err.value) == "precision = 'bf17' is invalid; it must be auto, bf16 or fp32 (did you mean \"bf16\"?)"


def test_the_cpu_flags_are_read_from_torch_or_proc_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": True}, raising=False)
    assert precision.cpu_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "amx_bf16": True})
    assert precision.cpu_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": False})
    assert precision.cpu_native_bf16() is False
    monkeypatch.delattr(torch.cpu, "get_capabilities")  # an older torch: the kernel's flags
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "Path", lambda _: cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert precision.cpu_native_bf16() is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert precision.cpu_native_bf16() is False
    cpuinfo.unlink()
    assert precision.cpu_native_bf16() is None  # unreadable: unknown
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert precision.cpu_native_bf16() is None


def test_eval_records_and_logs_the_precision_that_ran(trained, synthetic_root, tmp_path, native, capsys):
    ckpt = trained / "checkpoints" / "last"
    args = ("eval", ckpt, "-t", "synthetic-fog", "--data-root", synthetic_root, "--mode", "whole", "--no-progress")
    native(True)
    assert rein(*args, "--out", tmp_path / "bf16") == 0
    err = capsys.readouterr().err.splitlines()
    assert NATIVE in err
    estimate = next(k for k, line in enumerate(err) if line.startswith("on the CPU this takes about"))
    assert err.index(NATIVE) < estimate  # said before the work starts
    bf16 = json.loads((tmp_path / "bf16" / "results.json").read_text())
    assert bf16["precision"] == "bf16" and read_results(tmp_path / "bf16" / "results.json").precision == "bf16"
    setting = "split: val; inference: whole (crop 64); flip test-time augmentation: no; precision: bf16"
    assert f"- {setting}\n" in (tmp_path / "bf16" / "report.md").read_text()
    assert f"<li>{setting}</li>" in (tmp_path / "bf16" / "report.html").read_text()
    native(False)
    assert rein(*args, "--precision", "bf16", "--out", tmp_path / "asked") == 0
    assert NOT_NATIVE in capsys.readouterr().err.splitlines()
    assert json.loads((tmp_path / "asked" / "results.json").read_text())["precision"] == "fp32"
    native(True)
    assert rein(*args, "--precision", "fp32", "--out", tmp_path / "fp32") == 0
    assert "precision: fp32 (as asked)" in capsys.readouterr().err.splitlines()
    fp32 = json.loads((tmp_path / "fp32" / "results.json").read_text())
    assert fp32["precision"] == "fp32"
    ours, theirs = bf16["datasets"]["synthetic-fog"]["mIoU"], fp32["datasets"]["synthetic-fog"]["mIoU"]
    assert abs(ours - theirs) < 5  # the same model, a little rounding apart


def test_the_cpu_estimate_times_the_model_under_the_evaluations_autocast(synthetic_root):
    from rein_cli.data.manifest import read_manifest
    from rein_cli.engine.scoring import cpu_estimate

    model = tiny_segmentor()
    seen = []
    call = model.semantic_scores

    def recorded(images):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return call(images)

    model.semantic_scores = recorded
    fog = [(read_manifest(synthetic_root / "synthetic-fog"), True)]
    settings = dict(split="val", stride=43, pairs=[None], mode="whole", flip=False)
    cpu_estimate(model, fog, autocast=torch.bfloat16, **settings)
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    cpu_estimate(model, fog, **settings)
    assert seen and set(seen) == {None}


def test_predict_says_what_it_runs_in(trained, synthetic_root, tmp_path, native, capsys):
    ckpt = trained / "checkpoints" / "last"
    images = val_images(synthetic_root)[0]
    common = ("--mode", "whole", "--format", "label", "--no-progress")
    native(True)
    assert rein("predict", ckpt, images, "--out", tmp_path / "bf16", "--precision", "bf16", *common) == 0
    assert NATIVE in capsys.readouterr().err.splitlines()
    native(False)
    assert rein("predict", ckpt, images, "--out", tmp_path / "asked", "--precision", "bf16", *common) == 0
    assert NOT_NATIVE in capsys.readouterr().err.splitlines()
    assert rein("predict", ckpt, images, "--out", tmp_path / "fp32", *common) == 0
    assert "precision: fp32 (the CPU has no native bf16)" in capsys.readouterr().err.splitlines()
    ours = sorted((tmp_path / "bf16" / "labels").rglob("*.png"))
    theirs = sorted((tmp_path / "fp32" / "labels").rglob("*.png"))
    assert ours and len(ours) == len(theirs)
    from PIL import Image

    pairs = zip(ours, theirs, strict=True)
    agree = np.mean([np.mean(np.asarray(Image.open(a)) == np.asarray(Image.open(b))) for a, b in pairs])
    assert agree >= 0.95, agree


def test_demo_passes_precision_on(monkeypatch, tmp_path, capsys):
    import rein_cli.demo

    seen = {}

    def stop(out, **kwargs):
        seen.update(kwargs)
        raise ReinError("stopped here")

    monkeypatch.setattr(rein_cli.demo, "run_demo", stop)
    assert rein("demo", "--out", tmp_path / "d", "--precision", "bf16") == 1
    assert seen["precision"] == "bf16"
    assert rein("demo", "--out", tmp_path / "d") == 1
    assert seen["precision"] is None  # the recipe's eval.precision (auto)
    capsys.readouterr()
    assert rein("demo", "--out", tmp_path / "d", "--precision", "half") == 2
    assert "'half' is not one of 'auto', 'bf16', 'fp32'" in " ".join(capsys.readouterr().err.replace("│", " ").split())


def test_the_demo_evaluates_and_draws_in_the_precision_asked(tmp_path, native, caplog):
    from rein_cli.demo import run_demo

    native(False)
    caplog.set_level(logging.INFO, logger="rein_cli")
    result = run_demo(tmp_path / "d", iters=1, num_train=8, num_val=1, device="cpu", precision="bf16", progress=False)
    assert result.evaluation.precision == "fp32"  # no native bf16 here: fp32, and said
    assert json.loads((tmp_path / "d" / "results.json").read_text())["precision"] == "fp32"
    assert NOT_NATIVE in caplog.messages
    assert len(list((tmp_path / "d" / "predictions").glob("*.jpg"))) >= 1


def test_the_config_key_is_checked_and_training_evaluates_in_it(synthetic_root, tmp_path, native, capsys):
    assert rein("train", *sets("eval.precision=bf17"), "--out", tmp_path / "bad") == 1
    assert errors(capsys).splitlines() == [
        "error: eval.precision = 'bf17' is invalid; it must be auto, bf16 or fp32 (did you mean \"bf16\"?)"
    ]
    assert not (tmp_path / "bad").exists()
    native(True, auto_bf16=False)
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']", "eval.precision=bf16")
    assert rein("train", *args, "--iters", 1, "--out", tmp_path / "run", "--no-progress") == 0
    assert NATIVE in capsys.readouterr().err.splitlines()
    assert json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["precision"] == "bf16"
    shutil.rmtree(tmp_path / "run")
