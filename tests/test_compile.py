"""torch.compile (``train.compile``, ``eval.compile``, ``--compile``): the same numbers, the same checkpoints, and an
uncompiled run, after one line, when compiling is not possible or fails.

Only the first test compiles with Inductor (C++, slow on a small CPU); the others trace with the "eager" backend,
which goes through torch.compile's whole path but generates no code."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rein_cli.engine import compile as compile_
from rein_cli.engine.compile import compile_for, compile_segmentor, is_compiled

from .helpers import TINY, rein, sets

CPU = torch.device("cpu")
NO_COMPILER = "torch.compile is off: no C++ compiler found for Inductor on the CPU (install g++, or set CXX)"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts with torch.compile's caches and counters empty (its recompile limit is per process)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.fixture
def eager_backend(monkeypatch):
    monkeypatch.setattr(compile_, "BACKEND", "eager")


def tiny_mask2former():
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    return build_segmentor(**{**TINY, "head": "mask2former", "rein": {"token_length": 20}})


def tensors(value) -> list[torch.Tensor]:
    """Every tensor of a nested output (dicts, lists, tuples), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    return []


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|a|: the difference on the scale of the values."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


@pytest.mark.slow  # Inductor's C++ build: 9 minutes with its cache empty on a loaded 2-core CPU, 40 s with it warm
def test_compiled_model_computes_what_the_uncompiled_one_does(fresh_dynamo, monkeypatch):
    """One forward and backward of the tiny Rein + Mask2Former model, uncompiled then compiled with Inductor: outputs
    within 1e-4 of their scale, each of the 30 loss terms within 1e-5 relative, gradients within 1e-4 of scale.

    Two steps of the loss are not continuous in the outputs, and outputs that differ in their last bits (any other
    float order) can take the other branch, moving loss terms by up to 4e-4 relative on this untrained model: the
    Hungarian matching (near-equal costs) and PointRend's choice of the points nearest the decision boundary (a
    top-k of |logit|). So the compiled step reuses the uncompiled step's matching, and the points are uniform."""
    import functools

    from rein_cli.models.mask2former import criterion

    if compile_.compiler_problem(CPU):
        pytest.skip("no C++ compiler for Inductor")
    monkeypatch.setattr(criterion, "uncertain_points", functools.partial(criterion.uncertain_points, importance=0.0))
    matched, replay, hungarian = [], [], criterion.hungarian_match

    def match(*args, **kwargs):
        if replay:
            return replay.pop(0)
        matched.append(hungarian(*args, **kwargs))
        return matched[-1]

    monkeypatch.setattr(criterion, "hungarian_match", match)
    model = tiny_mask2former().train()
    torch.manual_seed(1)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))

    def step():
        torch.manual_seed(2)  # the Mask2Former losses draw random points: the same ones for both
        model.zero_grad(set_to_none=True)
        outputs = model(images)
        losses = model.head.loss(outputs, labels)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return [t.detach() for t in tensors(outputs)], {k: v.item() for k, v in losses.items()}, grads

    outputs, losses, grads = step()
    keys = list(model.state_dict())
    assert compile_segmentor(model, CPU)
    replay.extend(matched)
    outputs_c, losses_c, grads_c = step()
    assert matched and not replay  # every matching reused
    assert is_compiled(model) and fresh_dynamo["stats"]["unique_graphs"] >= 1  # compiled, not fallen back
    assert list(model.state_dict()) == keys  # no _orig_mod. prefix
    assert len(outputs) == len(outputs_c) and all(
        relative(a, b) <= 1e-4 for a, b in zip(outputs, outputs_c, strict=True)
    )
    assert len(losses) == 30 and losses.keys() == losses_c.keys()
    worst = max(abs(losses[k] - losses_c[k]) / abs(losses[k]) for k in losses)
    assert worst <= 1e-5, worst
    assert grads.keys() == grads_c.keys() and all(relative(grads[n], grads_c[n]) <= 1e-4 for n in grads)


def test_a_missing_cpu_compiler_is_one_line_and_the_model_runs_uncompiled(monkeypatch, caplog, tiny_model):
    from torch._inductor import cpp_builder, exc

    def missing() -> str:
        raise exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_model.eval()(images)
        with caplog.at_level(logging.WARNING):
            assert not compile_segmentor(tiny_model, CPU)
        assert not is_compiled(tiny_model)
        assert torch.equal(tiny_model(images), expected)
    assert [r.getMessage() for r in caplog.records] == [f"{NO_COMPILER}; running uncompiled"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_setting_cxx_as_the_message_says_gives_inductor_its_compiler(tmp_path):
    """The remedy of the message: a CXX that is no compiler gives the message, CXX naming one (g++) clears it."""
    code = "import torch; from rein_cli.engine.compile import compiler_problem as p; print(p(torch.device('cpu')))"
    said = {}
    for cxx in (str(tmp_path / "no-such-compiler"), shutil.which("g++")):
        env = {**os.environ, "CXX": cxx, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        said[cxx] = done.stdout.strip().splitlines()[-1]
    assert list(said.values()) == [NO_COMPILER.removeprefix("torch.compile is off: "), "None"]


def test_a_compilation_that_fails_is_one_line_and_the_call_runs_uncompiled(monkeypatch, caplog, tiny_model):
    def failing(graph, example_inputs):
        raise RuntimeError("the C++ build failed")

    monkeypatch.setattr(compile_, "BACKEND", failing)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_model.eval()(images)
        assert compile_segmentor(tiny_model, CPU)
        with caplog.at_level(logging.WARNING):
            got = tiny_model(images)
        assert torch.equal(got, expected)
        assert not is_compiled(tiny_model)  # the later calls run uncompiled, without trying again
        assert torch.equal(tiny_model(images), expected)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages == ["torch.compile failed (RuntimeError: the C++ build failed); running uncompiled"]


def test_compile_for_puts_the_model_back_as_it_was(eager_backend, tiny_model):
    undo = compile_for(tiny_model, CPU)
    assert is_compiled(tiny_model)
    undo()
    assert not is_compiled(tiny_model)
    compile_segmentor(tiny_model, CPU)  # compiled already (a run with train.compile): it stays so
    compile_for(tiny_model, CPU)()
    assert is_compiled(tiny_model)


def test_a_compiled_run_writes_checkpoints_an_uncompiled_model_loads(
    eager_backend, fresh_dynamo, trained, synthetic_root, tmp_path, capsys
):
    """The same settings as the uncompiled run `trained` (the same checkpoint keys), with --compile."""
    from rein_cli.engine.checkpoint import load_segmentor

    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']", "eval.compile=true")
    assert rein("train", *args, "--iters", 2, "--compile", "--out", tmp_path / "run", "--no-progress") == 0
    assert "torch.compile: the model compiles at its first calls (minutes on a CPU)" in capsys.readouterr().err
    assert fresh_dynamo["stats"]["unique_graphs"] >= 2  # the training steps and the no-grad evaluation
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "compile: true" in config
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    saved = load_file(ckpt / "model.safetensors")
    assert saved.keys() == load_file(trained / "checkpoints" / "last" / "model.safetensors").keys()  # no _orig_mod.
    loaded = load_segmentor(ckpt)  # uncompiled
    assert not is_compiled(loaded) and all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


def test_eval_and_predict_compile_an_uncompiled_runs_checkpoint_with_the_same_results(
    eager_backend, fresh_dynamo, trained, synthetic_root, tmp_path
):
    ckpt = trained / "checkpoints" / "last"
    common = ["--data", "synthetic-fog", "--data-root", synthetic_root, "--mode", "whole", "--no-progress"]
    miou = {}
    for flag in ((), ("--compile",)):
        out = tmp_path / f"eval{len(flag)}"
        assert rein("eval", ckpt, *common, "--out", out, *flag) == 0
        miou[flag] = json.loads((out / "results.json").read_text())["datasets"]["synthetic-fog"]["mIoU"]
    assert fresh_dynamo["stats"]["unique_graphs"] >= 1
    assert miou[()] == miou[("--compile",)]
    images = synthetic_root / "synthetic-fog" / "images"
    files = {}
    for flag in ((), ("--compile",)):
        out = tmp_path / f"pred{len(flag)}"
        assert rein("predict", ckpt, images, "--out", out, "--format", "label", "--no-progress", *flag) == 0
        files[flag] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.png"))}
    assert files[()] and files[()] == files[("--compile",)]


def test_compile_keys_are_checked(tmp_path, capsys):
    assert rein("train", *sets("train.compile='maybe'"), "--iters", 1, "--out", tmp_path / "r") == 1
    assert "error: train.compile must be bool, got 'maybe'" in capsys.readouterr().err


def test_a_run_saved_before_the_compile_keys_resumes_with_compile_on(eager_backend, synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.checkpoint_interval=1")
    assert rein("train", *args, "--iters", 1, "--out", run, "--no-progress") == 0
    config = run / "config.yaml"
    assert config.read_text().count("  compile: false\n") == 2  # train.compile and eval.compile
    config.write_text(config.read_text().replace("  compile: false\n", ""))  # as a run written before them
    capsys.readouterr()
    assert rein("train", "--resume", run, "--iters", 2, "--compile", "--no-progress") == 0
    assert "torch.compile: the model compiles at its first calls" in capsys.readouterr().err
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
