"""DDP on the CPU (gloo, 2 processes): gradients as the official averaged losses; `rein train --devices 2`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .helpers import TINY, sets

ROOT = Path(__file__).resolve().parent.parent

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
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


def test_a_failing_process_fails_the_command(tmp_path):
    done = launch("-m", "rein_cli", "train", "--devices", 2, "--set", "data.batch_size=3", "--out", tmp_path / "r")
    assert done.returncode != 0
    assert "data.batch_size = 3 (the global batch) does not divide into 2 device(s)" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("batch", "world", "accumulation", "expected"), [(8, 2, 2, 2), (16, 1, 4, 4), (2, 2, 1, 1)])
def test_the_per_device_batch(batch, world, accumulation, expected):
    from rein_cli.config import per_device_batch

    assert per_device_batch(batch, world, accumulation) == expected
