"""Training: a complete run directory, both heads, the baselines, clear failures, progress without a terminal."""

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from .helpers import errors, rein, sets


def test_train_writes_a_complete_run(trained):
    assert (trained / "config.yaml").is_file()
    *lines, final = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in lines)
    assert lines[1]["lr"] < lines[0]["lr"]  # poly decay
    assert final["step"] == 3 and set(final["eval"]) == {"synthetic-fog"}  # the evaluation after training
    ckpt = trained / "checkpoints" / "last"
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    results = json.loads((trained / "eval" / "results.json").read_text())
    assert list(results["datasets"]) == ["synthetic-fog"] and 0 <= results["datasets"]["synthetic-fog"]["mIoU"] <= 100


def test_train_and_eval_with_the_mask2former_head(synthetic_root, tmp_path):
    args = sets(
        f"data.root={synthetic_root}",
        "model.head=mask2former",
        "model.rein.token_length=20",
        "data.eval=['synthetic-snow']",
    )
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "d8.loss_dice" in lines[-2] and np.isfinite(lines[-2]["loss"]) and "eval" in lines[-1]
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert 0 <= results["datasets"]["synthetic-snow"]["mIoU"] <= 100


@pytest.mark.parametrize("method", ["frozen", "full"])
def test_train_the_baselines(synthetic_root, tmp_path, method):
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert (
        rein(
            "train",
            *args,
            "--method",
            method,
            "--head",
            "fpn",
            "--iters",
            1,
            "--out",
            tmp_path / "run",
            "--no-progress",
        )
        == 0
    )
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["method"] == method and config["backbone_in_checkpoint"] is True
    keys = set(load_file(str(ckpt / "model.safetensors")))
    assert not any(k.startswith("backbone.reins") for k in keys)


def test_existing_run_dir_is_never_overwritten(trained, tmp_path, capsys):
    assert rein("train", *sets(), "--out", trained) == 1
    assert errors(capsys) == (
        f"error: output directory {trained} holds a run of `rein train`: continue it with `rein train --resume "
        f"{trained}` (a finished one with --iters beyond its end), or choose another --out"
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert rein("train", *sets(), "--out", tmp_path / "other") == 1
    assert errors(capsys).endswith("already exists and is not empty; choose another --out")


def test_a_corrupt_training_image_in_a_worker_is_one_line(synthetic_root, tmp_path, capsys):

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "synthetic", data / "synthetic")
    bad = data / "synthetic" / "images" / "train" / "000003.jpg"
    bad.write_bytes(b"not a jpeg")
    args = sets(f"data.root={data}", "data.num_workers=1", "data.eval=[]", "data.batch_size=8")
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 1
    last = errors(capsys).splitlines()[-1]  # after the log lines: the error, on one line
    assert last.startswith("error: cannot read image") and str(bad) in last and "Traceback" not in last
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_without_a_terminal_training_prints_plain_progress_lines(synthetic_root, tmp_path, capsys, monkeypatch):
    from rein_cli import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.01)
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert rein("train", *args, "--iters", 3, "--out", tmp_path / "run", "--no-progress") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training ")]
    assert lines, "no progress line"
    pattern = r"training [0-3]/3( loss \d+\.\d{3} lr \S+)?(( \d+\.\d+ (s/it|it/s) ETA \S+)| done in \S+)?"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert re.fullmatch(r"training 3/3 loss \d+\.\d{3} lr \S+ done in \d+s", lines[-1]), lines[-1]


def test_a_run_directory_in_use_is_refused(synthetic_root, tmp_path, capsys):
    from rein_cli.engine.runs import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another live run holds it
        args = sets(f"data.root={synthetic_root}", "data.eval=[]")
        assert rein("train", *args, "--iters", 1, "--out", run, "--no-progress") == 1
        assert f"{run} is in use by another run (pid " in errors(capsys)
    assert [p.name for p in run.iterdir()] == [".lock"]  # nothing written by the refused run
    assert rein("train", *sets(f"data.root={synthetic_root}", "data.eval=[]"), "--iters", 1, "--out", run) == 0


def test_evaluation_datasets_are_checked_before_training(tmp_path, capsys):
    from . import fake_datasets as fake

    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1, 2], "classes: [a, b, c]\n")
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "three", "--data-root", root) == 0
    args = sets(f"data.root={root}", "data.train=three", "model.num_classes=3")  # data.eval left at synthetic
    assert rein("train", *args, "--iters", 1000, "--out", tmp_path / "run") == 1
    err = errors(capsys)
    assert "evaluation dataset synthetic has 19 classes but the model 3" in err and "data.eval=[three]" in err
    assert not (tmp_path / "run").exists()  # refused before a single iteration


def test_accumulation_gives_the_gradient_of_the_whole_batch(tiny_model):
    import torch

    from rein_cli.engine.step import accumulate_gradients

    torch.manual_seed(1)
    images, labels = torch.randn(4, 3, 64, 64), torch.randint(0, 19, (4, 64, 64))  # no ignored pixel: a plain mean
    tiny_model.train()
    device = torch.device("cpu")
    whole = accumulate_gradients(tiny_model, tiny_model, [(images, labels)], 1, device, None, 0)
    grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad()
    halves = [(images[:2], labels[:2]), (images[2:], labels[2:])]
    parts = accumulate_gradients(tiny_model, tiny_model, halves, 2, device, None, 0)
    assert abs(parts["loss"] - whole["loss"]) < 1e-5
    for name, p in tiny_model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_keeps_fewer_tensors_and_the_same_gradients(tiny_model):
    import torch

    torch.manual_seed(2)
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    tiny_model.train()
    results = []
    for on in (False, True):
        tiny_model.backbone.checkpointing = on
        tiny_model.zero_grad()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, s=saved: s.append(t) or t, lambda t: t):
            loss = sum(tiny_model.training_loss(images, labels).values())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        results.append((len(saved), loss.detach(), grads))
    (plain, loss_plain, grads_plain), (checkpointed, loss_checkpointed, grads_checkpointed) = results
    assert checkpointed < plain
    assert torch.equal(loss_plain, loss_checkpointed)
    assert all(torch.equal(grads_plain[n], grads_checkpointed[n]) for n in grads_plain)


def test_precision_choices():
    import torch

    from rein_cli.engine.step import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None  # the CPU stays float32
    assert autocast_dtype("bf16", cpu) is torch.bfloat16  # asked for: CPU autocast


def test_running_out_of_gpu_memory_names_what_to_lower(synthetic_root, tmp_path, capsys, monkeypatch):
    import torch

    from rein_cli.engine import step

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(step, "as_float", out_of_memory)
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 1
    err = errors(capsys).splitlines()[-1]
    assert err.startswith("error: out of GPU memory during training; lower data.batch_size (now 2, 2 per device")
    assert "train.accumulation" in err and "train.checkpointing=true" in err and "model.crop_size (now 64)" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_periodic_evaluation_logs_each_result_and_keeps_the_best(synthetic_root, tmp_path):
    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']", "train.eval_interval=1")
    assert rein("train", *args, "--iters", 2, "--out", run, "--no-progress") == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [1, 2] and all(set(r["eval"]) == {"synthetic-fog"} for r in evals)
    assert all(abs(r["mean_mIoU"] - r["eval"]["synthetic-fog"]) <= 0.005 for r in evals)  # rounded to 0.01
    best = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    top = max(evals, key=lambda r: r["mean_mIoU"])  # the first of equal ones
    assert best["mean_mIoU"] == top["mean_mIoU"] and best["iterations"] == top["step"]
    assert (run / "eval" / "iter_1" / "results.json").is_file() and (run / "eval" / "results.json").is_file()


def test_training_ends_with_its_evaluation_shown_and_recorded(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = sets("data.eval=['synthetic-fog','synthetic-night']")  # train.eval_interval left at 0
    assert rein("train", *args, "--data-root", synthetic_root, "--iters", 2, "--out", run, "--no-progress") == 0
    out = capsys.readouterr().out
    results = json.loads((run / "eval" / "results.json").read_text())
    table = out.split("run directory:")[0]
    header, _, miou = table.splitlines()[:3]
    assert header.split() == ["synthetic-fog", "synthetic-night"]  # compact: no per-class rows
    fog, night = (results["datasets"][n]["mIoU"] for n in ("synthetic-fog", "synthetic-night"))
    assert miou.split() == ["mIoU", f"{fog:.2f}", f"{night:.2f}"] and "road" not in table
    assert re.search(rf"^DG mean mIoU {results['mean_mIoU']:.2f} .*over synthetic-fog, synthetic-night$", table, re.M)
    assert f"per-class IoU and charts: {run / 'eval' / 'report.md'}" in table
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1] == {"step": 2, "eval": {"synthetic-fog": fog, "synthetic-night": night}, "mean_mIoU": results[
        "mean_mIoU"]}  # fmt: skip
    assert not (run / "checkpoints" / "best").exists()  # best: with periodic evaluation only


def test_data_root_option_is_where_training_finds_its_data(
    synthetic_root, cityscapes_folder, tmp_path, monkeypatch, capsys
):
    import shlex

    import yaml

    monkeypatch.chdir(synthetic_root.parent)
    args = sets("data.eval=[]")
    assert rein("train", *args, "--data-root", synthetic_root.name, "--iters", 1, "--out", tmp_path / "r") == 0
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["data"]["root"] == str(synthetic_root)  # as --set data.root=DIR, made absolute
    root = tmp_path / "root"
    args = [*sets("data.eval=[]"), "--data", "cityscapes", "--data-root", root, "--iters", 1, "--out", tmp_path / "r2"]
    assert rein("train", *args) == 1
    err = errors(capsys)
    assert f"dataset cityscapes is not prepared under {root}" in err
    remedy = shlex.split(re.search(r"run `rein (data prepare [^`]+)`", err)[1])
    assert remedy == ["data", "prepare", "cityscapes", "--from", "PATH", "--data-root", str(root)]
    folder, _ = cityscapes_folder
    assert rein(*(str(folder) if w == "PATH" else w for w in remedy), "--no-progress") == 0  # the remedy, followed
    assert rein("train", *args) == 0  # and training finds the dataset where it looked


def test_evaluation_during_training_has_its_own_progress_lines(synthetic_root, tmp_path, capsys, monkeypatch):
    from rein_cli import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.005)
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']", "train.eval_interval=1")
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("training ", "eval "))]
    rate = re.compile(r"eval synthetic-fog \d+/4 .*(img/s|s/img)")  # the evaluation's own count and speed
    assert any(rate.match(line) for line in lines), lines
    final = max(i for i, line in enumerate(lines) if line.startswith("training "))
    assert re.match(r"training 2/2 .* done in", lines[final]), lines[final]  # the training line ends first
    assert all(line.startswith("eval ") for line in lines[final + 1 :])  # then only the final evaluation reports
    periodic = [i for i, line in enumerate(lines[:final]) if line.startswith("eval ")]  # the one at step 1
    assert periodic and all(lines[i].startswith("eval ") for i in range(periodic[0], periodic[-1] + 1))  # alone
