"""Every remedy works when followed: an interrupted run, a full disk, a stopped preparation, a file given as --out,
frost offline. Each test takes the line the command printed, does what it says, and expects success."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import checkout_env, errors, rein, sets

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, process groups and file-size limits are POSIX")


def follow(line: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the `rein ...` command that ``line`` names between backticks, as printed."""
    found = re.search(r"`(rein [^`]+)`", line)
    assert found, f"no command in {line!r}"
    args = shlex.split(found[1])[1:]
    command = [sys.executable, "-m", "rein_cli", "--quiet", *args, "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, env=checkout_env(), cwd=cwd, timeout=600)


def training(run: Path, synthetic_root: Path, *extra: str, iters: int = 6) -> list[str]:
    """A quiet ``rein train`` of the tiny model into ``run``, a checkpoint every 2 iterations unless told."""
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.checkpoint_interval=2", *extra)
    return ["--quiet", "train", *args, "--iters", str(iters), "--out", str(run), "--no-progress"]


def steps(run: Path) -> list[int]:
    records = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in records if "loss" in r]


def wait_for(condition, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# `rein` in a child that sends itself a signal at the start of an iteration (the one before it done), or as the
# evaluation after training starts
SIGNAL_AT = """
import os, signal, sys
import rein_cli.engine.evaluate as evaluation

sig, at = getattr(signal, sys.argv[1]), sys.argv[2]
del sys.argv[1:3]
evaluate = evaluation.evaluate

def signal_then_evaluate(*args, **kwargs):
    if at == "evaluation":
        os.kill(os.getpid(), sig)
    return evaluate(*args, **kwargs)

evaluation.evaluate = signal_then_evaluate  # before the training loop imports it
from rein_cli.engine import train
lr_at = train.lr_at

def signal_then_lr(step, **kwargs):
    if at.isdigit() and step == int(at):
        os.kill(os.getpid(), sig)
    return lr_at(step, **kwargs)

train.lr_at = signal_then_lr
from rein_cli.cli import run
run(sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("sig", "at", "extra", "expected"),
    [
        ("SIGINT", "3", [], "continue the run with `rein train --resume {run}` (from its checkpoint of iteration 2)"),
        (
            "SIGTERM",
            "1",
            ["train.checkpoint_interval=4"],
            "start the run again in its folder with `rein train --resume {run}` (it stopped before its first "
            "checkpoint)",
        ),
        (
            "SIGINT",
            "evaluation",
            ["data.eval=['synthetic-fog']"],
            "finish the run (its evaluation after training) with `rein train --resume {run}`",
        ),
    ],
    ids=["after-a-checkpoint", "before-the-first-checkpoint", "in-the-evaluation-after-training"],
)
def test_an_interrupted_run_names_the_command_that_continues_it_and_that_command_does(
    spawn, synthetic_root, tmp_path, sig, at, extra, expected
):
    run = tmp_path / "run"
    process = spawn("-c", SIGNAL_AT, sig, at, *training(run, synthetic_root, *extra))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert err == f"interrupted; {expected.format(run=run)}\n"
    same = spawn("-m", "rein_cli", *training(run, synthetic_root, *extra))  # the same command is refused ...
    refused = same.communicate(timeout=300)[1]
    assert same.returncode == 1 and f"holds a run of `rein train`: continue it with `rein train --resume {run}`" in (
        refused
    )
    done = follow(err)  # ... the one printed goes on
    assert done.returncode == 0, done.stderr
    assert steps(run) == [1, 2, 3, 4, 5, 6]
    assert (run / "checkpoints" / "iter_6" / "training_state.pt").is_file()
    assert (run / "eval" / "results.json").is_file() == bool(extra and "eval" in extra[0])


# `rein` in a child whose iterations take a while (training is started as usual, every iteration 0.3 s longer)
SLOW = """
import sys, time
from rein_cli.engine import train
lr_at = train.lr_at

def slowly(step, **kwargs):
    time.sleep(0.3)
    return lr_at(step, **kwargs)

train.lr_at = slowly
from rein_cli.cli import run
run(sys.argv[1:])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_group_with_loader_workers_is_one_line_and_its_command_resumes(
    spawn, synthetic_root, tmp_path, sig
):
    run = tmp_path / "run"
    args = training(run, synthetic_root, "data.num_workers=2", iters=12)
    process = spawn("-c", SLOW, *args)
    wait_for(lambda: (run / "checkpoints" / "iter_2").is_dir() or process.poll() is not None)
    os.killpg(process.pid, getattr(signal, sig))  # the command and its two loader workers, as a job scheduler does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert re.fullmatch(
        rf"interrupted; continue the run with `rein train --resume {re.escape(str(run))}` \(from its checkpoint of "
        r"iteration \d+\)\n",
        err,
    ), err  # one line: no data-loader traceback, no "Exception ignored"
    done = follow(err)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert steps(run) == list(range(1, 13))


FULL_DISK = """
import resource, signal, sys
from rein_cli.engine import train

save, saved = train.save_checkpoint, []

def save_then_the_disk_is_full(*args, **kwargs):  # after the first step checkpoint (last, then iter_2)
    saved.append(save(*args, **kwargs))
    if len(saved) == 2:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return saved[-1]

train.save_checkpoint = save_then_the_disk_is_full
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
from rein_cli.cli import run
run(sys.argv[1:])
"""


def test_a_full_disk_in_training_names_the_file_and_the_command_that_continues_the_run(spawn, synthetic_root, tmp_path):
    run = tmp_path / "run"
    process = spawn("-c", FULL_DISK, *training(run, synthetic_root))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(run))}/checkpoints/last/model.safetensors: the disk or the file-size "
        r"limit is full \(File too large\); free space there \(`df -h`; `ulimit -f` shows the file-size limit\) and "
        r"continue the run with "
        rf"`rein train --resume {re.escape(str(run))}` \(from its checkpoint of iteration 2\)\n",
        err,
    ), err
    done = follow(err)  # with space again
    assert done.returncode == 0, done.stderr
    assert steps(run) == [1, 2, 3, 4, 5, 6]


# `rein data prepare` whose label conversions take a while, in 2 worker processes
SLOW_PREPARE = """
import sys, time
from rein_cli.data import prepare
convert = prepare.convert_pair

def slowly(task):
    time.sleep(0.2)
    return convert(task)

prepare.convert_pair = slowly
from rein_cli.cli import run
run(sys.argv[1:])
"""


@pytest.mark.parametrize("group", [True, False], ids=["process-group", "command-only"])
def test_sigterm_during_a_preparation_is_one_line_leaves_no_temporary_file_and_the_same_command_completes(
    spawn, tmp_path, group
):
    from rein_cli.data.verify import verify

    from . import fake_datasets as fake

    sources, _ = fake.cityscapes(tmp_path / "src")
    out = tmp_path / "cityscapes"
    args = ["--quiet", "data", "prepare", "cityscapes", "--out", out, "--workers", 2, "--no-progress"]
    args += [arg for source in sources for arg in ("--from", source)]
    process = spawn("-c", SLOW_PREPARE, *args)
    wait_for(lambda: any((out / "labels").rglob("*.png")) or process.poll() is not None)
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == "interrupted; run the same command again: a download or a preparation goes on where it stopped\n"
    assert not list(out.rglob("*.tmp")) and not (out / "manifest.json").exists()
    process = spawn("-m", "rein_cli", *args)  # the same command
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    manifest, problems = verify(out, tmp_path, workers=1, progress=False)
    assert problems == [] and manifest.counts == {"train": 4, "val": 2, "test": 1}


def test_an_out_that_is_a_file_is_named_as_such_by_every_command(trained, synthetic_root, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    checkpoint, images = trained / "checkpoints" / "last", synthetic_root / "synthetic" / "images" / "val"
    commands = {
        "train": ["train", *sets(f"data.root={synthetic_root}", "data.eval=[]"), "--iters", 1, "--no-progress"],
        "eval": ["eval", checkpoint, "-t", "synthetic", "--data-root", synthetic_root, "--no-progress"],
        "predict": ["predict", checkpoint, images, "--no-progress"],
        "demo": ["demo", "--iters", 1, "--no-progress"],
        "compare": ["compare", trained],
        "convert": ["convert", tmp_path / "official.pth", "--backbone", "vit-tiny"],
        "data prepare": ["data", "prepare", "cityscapes", "--from", tmp_path],
    }
    for name, args in commands.items():
        assert rein(*args, "--out", file) == 1, name
        assert errors(capsys).splitlines()[-1] == f"error: --out {file} is a file, not a folder; choose a folder", name
    assert file.read_text() == "not a folder"
    assert rein("compare", trained, "--out", file / "inside") == 1
    assert (
        errors(capsys)
        == f"error: --out {file / 'inside'} lies in {file}, which is a file, not a folder; choose a folder"
    )
    assert rein("compare", trained, "--out", tmp_path / "a-folder") == 0  # a folder, as it says
    assert (tmp_path / "a-folder" / "compare.md").is_file()


def test_frost_offline_names_what_is_missing_and_each_way_to_provide_it_works(
    trained, synthetic_root, tmp_path, monkeypatch, capsys
):
    import hashlib
    import shutil

    import numpy as np
    from huggingface_hub import constants
    from PIL import Image

    from rein_cli.data import corruptions as C

    pytest.importorskip("cv2")
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))  # --offline sets both: put back
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.delenv("REIN_FROST_URL", raising=False)
    monkeypatch.setattr(C, "_checked", {})
    source = tmp_path / "frost-files"  # stand-ins for the six files, with the sizes and hashes frost checks
    source.mkdir()
    for k in range(1, 7):
        image = np.random.RandomState(k).randint(0, 256, (80, 120, 3)).astype(np.uint8)
        Image.fromarray(image).save(source / f"frost{k}.png")
    table = [(p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(source.iterdir())]
    monkeypatch.setitem(C.frost_images.__kwdefaults__, "files", tuple(table))

    home, out = tmp_path / "home", tmp_path / "eval"
    monkeypatch.setenv("REIN_HOME", str(home))
    checkpoint = trained / "checkpoints" / "last"
    command = ["--offline", "eval", checkpoint, "-t", "synthetic-fog", "--data-root", synthetic_root]
    command += ["--corruption", "frost:1", "--mode", "whole", "--out", out, "--no-progress"]
    assert rein(*command) == 1
    folder = home / "corruptions" / "frost"
    assert errors(capsys).splitlines()[-1] == (
        f"error: the frost corruption needs imagecorruptions' six frost images in {folder}, and frost1.png, "
        "frost2.png, frost3.png, frost4.png, frost5.png, frost6.png are not there; offline (--offline, "
        "HF_HUB_OFFLINE=1) nothing is downloaded: run it once online, without --offline or HF_HUB_OFFLINE (they "
        f"come from {C.FROST_BASE}), or copy those files (imagecorruptions 1.1.2's folder imagecorruptions/frost) "
        f"into {folder}, or set REIN_FROST_URL to a place that has them (a mirror, or file:///a/folder)"
    )
    assert not out.exists()  # nothing made before the check
    # a place that has them: REIN_FROST_URL, offline
    monkeypatch.setenv("REIN_FROST_URL", source.as_uri())
    assert rein(*command) == 0
    assert (out / "results.json").is_file() and sorted(p.name for p in folder.iterdir()) == [n for n, _, _ in table]
    # copied by hand into the folder
    monkeypatch.delenv("REIN_FROST_URL")
    monkeypatch.setattr(C, "_checked", {})
    home2 = tmp_path / "home2"
    monkeypatch.setenv("REIN_HOME", str(home2))
    shutil.rmtree(out)
    shutil.copytree(source, home2 / "corruptions" / "frost")
    assert rein(*command) == 0
    assert (out / "results.json").is_file()


def in_process(line: str) -> list[str]:
    """The arguments of the `rein ...` command ``line`` names, to run in this process."""
    found = re.search(r"`(rein [^`]+)`", line)
    assert found, f"no command in {line!r}"
    return shlex.split(found[1])[1:]


def test_the_settings_a_refused_run_names_are_the_ones_that_train(synthetic_root, tmp_path, capsys):
    from . import fake_datasets as fake

    base = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert rein("train", *base, "--set", "model.num_classes=5", "--iters", 1, "--out", tmp_path / "a") == 1
    line = errors(capsys)
    assert line.endswith("has 19 classes but model.num_classes is 5; give --set model.num_classes=19"), line
    assert rein("train", *base, "--set", "model.num_classes=19", "--iters", 1, "--out", tmp_path / "a") == 0

    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1, 2], "classes: [a, b, c]\n")
    root = tmp_path / "data"  # the shared benchmark's folder stays as it is
    root.mkdir()
    (root / "synthetic").symlink_to(synthetic_root / "synthetic")
    assert rein("data", "prepare", "custom", "--from", src, "--name", "three", "--data-root", root) == 0
    three = sets(f"data.root={root}", "data.train=three", "data.eval=[synthetic]")
    assert rein("train", *three, "--iters", 1, "--out", tmp_path / "b") == 1
    line = errors(capsys).splitlines()[-1]
    assert line.endswith('e.g. --set "data.eval=[three]", or none with --set "data.eval=[]"'), line
    for setting in re.findall(r'--set "([^"]+)"', line):  # either way, as written
        capsys.readouterr()
        out = tmp_path / f"run-{len(setting)}"
        assert rein("train", *three, "--set", setting, "--iters", 1, "--out", out, "--no-progress") == 0, errors(capsys)


def test_resume_with_another_out_names_the_way_and_it_resumes(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert rein("train", "--resume", run, "--iters", 4, "--out", tmp_path / "elsewhere") == 1
    assert (
        errors(capsys) == f"error: --resume {run} continues that run in place; leave out --out {tmp_path / 'elsewhere'}"
    )
    assert rein("train", "--resume", run, "--iters", 4, "--no-progress") == 0
    assert steps(run) == [1, 2, 3, 4] and not (tmp_path / "elsewhere").exists()


def test_compare_of_a_run_without_its_evaluation_names_the_eval_that_writes_it(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']")
    assert rein("train", *args, "--iters", 1, "--out", run, "--no-progress") == 0
    (run / "eval" / "results.json").unlink()
    capsys.readouterr()
    assert rein("compare", run, "--out", tmp_path / "cmp") == 1
    line = errors(capsys)
    assert f"training run {run} has no final evaluation results" in line and "--target synthetic-fog" in line
    assert rein(*in_process(line), "--no-progress") == 0  # the eval it names
    assert rein("compare", run, "--out", tmp_path / "cmp") == 0
    assert (tmp_path / "cmp" / "compare.md").is_file()


def test_prepare_of_a_prepared_folder_names_the_command_that_prepares_it_again(cityscapes_folder, tmp_path, capsys):
    folder, _ = cityscapes_folder
    out = tmp_path / "prepared"
    assert rein("data", "prepare", "cityscapes", "--from", folder, "--out", out, "--no-progress") == 0
    before = (out / "manifest.json").stat().st_mtime_ns
    assert rein("data", "prepare", "cityscapes", "--from", folder, "--out", out) == 1
    line = errors(capsys)
    assert line.endswith(
        f"to prepare it again run `rein data prepare cityscapes --from {folder} --out {out} --overwrite`"
    )
    assert rein(*in_process(line), "--no-progress") == 0
    assert (out / "manifest.json").stat().st_mtime_ns != before


def test_a_cuda_device_without_cuda_names_the_cpu_and_the_cpu_trains(synthetic_root, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    args = [*sets(f"data.root={synthetic_root}", "data.eval=[]"), "--iters", 1, "--out", tmp_path / "run"]
    assert rein("train", *args, "--device", "cuda") == 1
    assert errors(capsys) == "error: device cuda requested but CUDA is not available; use --device cpu"
    assert rein("train", *args, "--device", "cpu", "--no-progress") == 0


def test_a_dataset_not_prepared_names_the_prepare_that_makes_it_where_it_is_looked_for(
    cityscapes_folder, trained, tmp_path, capsys
):
    from . import fake_datasets as fake

    folder, _ = cityscapes_folder
    root = tmp_path / "root"
    # training: PATH is the user's download
    train = [*sets(f"data.root={root}", "data.train=cityscapes", "data.eval=[]"), "--iters", 1, "--no-progress"]
    assert rein("train", *train, "--out", tmp_path / "a") == 1
    line = errors(capsys).splitlines()[-1]
    assert f"run `rein data prepare cityscapes --from PATH --data-root {root}`" in line
    assert rein(*[str(folder) if a == "PATH" else a for a in in_process(line)], "--no-progress") == 0
    assert rein("train", *train, "--out", tmp_path / "a") == 0
    # evaluation: "..." is the user's download
    other = tmp_path / "other"
    evaluate = ["eval", trained / "checkpoints" / "last", "-t", "cityscapes", "--data-root", other, "--mode", "whole"]
    assert rein(*evaluate, "--out", tmp_path / "e", "--no-progress") == 1
    line = errors(capsys).splitlines()[-1]
    assert line.startswith("error: missing before evaluation can start: the dataset cityscapes: prepare it with ")
    assert line.endswith("; then rerun")
    assert rein(*[str(folder) if a == "..." else a for a in in_process(line)], "--no-progress") == 0
    assert rein(*evaluate, "--out", tmp_path / "e", "--no-progress") == 0  # then rerun
    # a custom folder as it comes: NAME is the user's choice
    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1, 2], "classes: [a, b, c]\n")
    custom = [*sets(f"data.root={root}", "data.eval=[]"), "--iters", 1, "--no-progress"]
    assert rein("train", *custom, "--data", src, "--out", tmp_path / "c") == 1
    line = errors(capsys).splitlines()[-1]
    assert line.endswith(f"run `rein data prepare custom --from {src} --name NAME --data-root {root}`, then use NAME")
    assert rein(*[("three" if a == "NAME" else a) for a in in_process(line)], "--no-progress") == 0
    assert rein("train", *custom, "--data", "three", "--out", tmp_path / "c") == 0
