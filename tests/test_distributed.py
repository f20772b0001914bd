"""DDP on the CPU (gloo, 2 processes): gradients as the official averaged losses; `rein train --devices 2`."""

import json
import os
import subprocess
import sys

import pytest
import torch

from .helpers import TINY, checkout_env, sets

# one DDP step of the tiny Mask2Former model on each rank's own batch; rank 0 saves the averaged gradients
WORKER = """
import sys
import torch
from torch.nn.parallel import DistributedDataParallel
from rein_cli.engine import distributed
from rein_cli.models.segmentor import build_segmentor

out, settings = sys.argv[1], eval(sys.argv[2])
distributed.init_from_env(torch.device("cpu"))
rank = distributed.rank()
torch.manual_seed(0)
model = build_segmentor(**settings)
model.train()
net = DistributedDataParallel(model)
torch.manual_seed(100 + rank)
images, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 3 - rank, (1, 64, 64))  # 3 and 2 masks
torch.manual_seed(200 + rank)  # the criterion's random points
losses = model.head.loss(net(images), labels)
sum(losses.values()).backward()
if rank == 0:
    torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
distributed.shutdown()
"""

SETTINGS = {**TINY, "head": "mask2former", "rein": {"token_length": 8}}


def launch(*args: object) -> subprocess.CompletedProcess:
    env = checkout_env()
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_one_ddp_step_averages_the_gradients_of_the_official_losses(tmp_path, monkeypatch):
    from rein_cli.models.mask2former import criterion
    from rein_cli.models.segmentor import build_segmentor

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = launch(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script, tmp_path / "g.pt", repr(SETTINGS)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "g.pt", weights_only=True)

    torch.manual_seed(0)
    model = build_segmentor(**SETTINGS)
    model.train()

    def losses(rank: int) -> torch.Tensor:
        torch.manual_seed(100 + rank)
        images, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 3 - rank, (1, 64, 64))  # 3 and 2 masks
        torch.manual_seed(200 + rank)
        return sum(model.training_loss(images, labels).values())

    counts = {}  # each rank's number of masks, as the criterion counts them
    for rank in (0, 1):
        monkeypatch.setattr(criterion, "mean_across_processes", lambda v, r=rank: counts.setdefault(r, v.clone()))
        losses(rank)
    mean = (counts[0] + counts[1]) / 2
    monkeypatch.setattr(criterion, "mean_across_processes", lambda v: mean.clone())  # all_reduce's answer
    ((losses(0) + losses(1)) / 2).backward()  # DDP averages the ranks' gradients
    ours = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == ddp.keys() and counts[0] != counts[1]
    # float32 summation order differs (DDP's bucketed all-reduce): equal to 1e-6 of each gradient's scale
    worst = max(((ours[n] - ddp[n]).abs().max() / ddp[n].abs().max().clamp(min=1)).item() for n in ours)
    assert worst <= 1e-6, worst


def test_rein_train_devices_starts_torchrun_and_rank_0_alone_writes(synthetic_root, tmp_path):
    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.checkpoint_interval=1")
    done = launch("-m", "rein_cli", "train", *args, "--iters", 2, "--devices", 2, "--out", run, "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting 2 processes: torchrun --standalone --nproc-per-node=2 -m rein_cli train" in done.stderr
    assert done.stdout.count("run directory:") == 1
    assert "2 process(es) x 1 image(s)" in done.stderr
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_1", "iter_2", "last"]
    state = torch.load(run / "checkpoints" / "iter_2" / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def test_what_can_be_checked_before_the_processes_start_is_one_line_and_none_starts(synthetic_root, tmp_path):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    common = ["--set", f"data.root={synthetic_root}", "--set", "data.eval=[]", "--out", tmp_path / "r"]
    cases = {  # the options, and the line
        "a batch that does not divide": (
            ["--devices", 2, "--set", "data.batch_size=3"],
            "data.batch_size = 3 (the global batch) does not divide into 2 device(s) x 1 accumulation step(s) as "
            "train.accumulation = 1; choose a multiple of 2",
        ),
        "more processes than the machine has": (
            ["--devices", cores + 1, "--set", "train.device=cpu"],
            f"--devices {cores + 1}: training runs on the CPU here (no GPU), which has {cores} core(s) for this "
            f"command; give --devices {cores} or fewer (one process per core at least), or train on a machine with "
            "GPUs",
        ),
        "a dataset not prepared": (
            ["--devices", 2, "--set", "train.device=cpu", "--data", "gta5", "--set", f"data.root={tmp_path / 'none'}"],
            f"dataset gta5 is not prepared under {tmp_path / 'none'}; run `rein data prepare gta5 --from PATH "
            f"--data-root {tmp_path / 'none'}` (see `rein data info gta5 --data-root {tmp_path / 'none'}`)",
        ),
    }
    for name, (options, line) in cases.items():
        done = launch("-m", "rein_cli", "train", *common, *options)
        assert done.returncode == 1, name
        assert done.stderr == f"error: {line}\n", name  # before any process: no torchrun line, nothing else
        assert not (tmp_path / "r").exists(), name


def test_a_failing_rank_ends_in_one_line(synthetic_root, tmp_path):
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", f"train.init_from={tmp_path / 'missing'}")
    done = launch("-m", "rein_cli", "--quiet", "train", *args, "--devices", 2, "--out", tmp_path / "r")
    assert done.returncode == 1
    # every process fails the same way (the launcher stops the others): the first one's line, alone
    assert (
        done.stderr
        == f"error: {tmp_path / 'missing'} is not a rein checkpoint (no config.json); give a checkpoint directory\n"
    )
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_an_interrupted_launch_names_the_command_with_its_devices_and_that_command_resumes(synthetic_root, tmp_path):
    import re
    import shlex
    import signal
    import time

    run = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.checkpoint_interval=2", "train.log_interval=2")
    env = checkout_env()
    command = [sys.executable, "-m", "rein_cli", "--quiet", "train", *args, "--iters", "100", "--devices", "2"]
    process = subprocess.Popen(
        [*command, "--out", str(run), "--no-progress"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "iter_2").is_dir() and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the launcher and both processes
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    found = re.fullmatch(
        rf"interrupted; continue the run with `(rein train --resume {re.escape(str(run))} --devices 2)` \(from its "
        r"checkpoint of iteration \d+\)\n",
        err,
    )
    assert found, err
    done = launch("-m", "rein_cli", "--quiet", *shlex.split(found[1])[1:], "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 101, 2))


@pytest.mark.parametrize(("batch", "world", "accumulation", "expected"), [(8, 2, 2, 2), (16, 1, 4, 4), (2, 2, 1, 1)])
def test_the_per_device_batch(batch, world, accumulation, expected):
    from rein_cli.config import per_device_batch

    assert per_device_batch(batch, world, accumulation) == expected


def test_the_launcher_prints_the_cause_first(tmp_path):
    from types import SimpleNamespace

    from rein_cli.engine.launch import FAILURES, _crash, _first_failure, record_failure
    from rein_cli.errors import Failure

    def failed(**ranks):  # rank -> (exit code, when)
        return SimpleNamespace(
            name="rein_cli",
            failures={int(r[1:]): SimpleNamespace(exitcode=c, timestamp=t) for r, (c, t) in ranks.items()},
        )

    os.environ[FAILURES], os.environ["RANK"] = str(tmp_path), "1"
    try:
        assert record_failure(Failure("the cause", 1), "")
        os.environ["RANK"] = "0"
        assert record_failure(Failure("interrupted; stopped by the launcher", 130), "")
    finally:
        del os.environ[FAILURES], os.environ["RANK"]
    assert _first_failure(tmp_path) == (Failure("the cause", 1), "")  # a process stopped because of it comes after
    assert _first_failure(tmp_path, rank=0) == (Failure("interrupted; stopped by the launcher", 130), "")
    killed = _crash(failed(r0=(130, 2), r1=(-9, 1)), 2, killed_only=True)
    assert killed[0].message.startswith("process 1 of 2 was killed by signal 9 without a word (most often for lack")
    assert _crash(failed(r0=(1, 2)), 2, killed_only=True) is None  # it said why: its own line
    assert _crash(failed(r0=(130, 2), r1=(3, 1)), 2)[0].message.startswith("process 1 of 2 ended with exit code 3")


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    from rein_cli.engine.launch import check_devices
    from rein_cli.errors import ReinError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ReinError) as err:
        check_devices(2, torch.device("cuda"))
    assert str(err.value) == (
        "--devices 2: this machine has 1 GPU(s); give --devices 1 or fewer (one process per GPU), or add steps with "
        "train.accumulation to train with the same global batch on fewer"
    )
    check_devices(1, torch.device("cuda"))  # as it says
