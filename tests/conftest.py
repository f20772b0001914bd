"""Shared fixtures: an offline, bar-free environment, tiny models, a tiny synthetic benchmark, a trained run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import zipfile

import pytest
import torch

from . import fake_datasets as fake
from .helpers import TINY, checkout_env, rein, sets


@pytest.fixture(autouse=True, scope="session")
def offline(tmp_path_factory):
    """No test may reach the network (huggingface_hub reads HF_HUB_OFFLINE once, at import), no progress bars,
    and $REIN_HOME (converted weights, pulled models) is a temporary folder, never the user's."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TQDM_DISABLE", "1")
        patch.setenv("REIN_HOME", str(tmp_path_factory.mktemp("rein-home")))
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(autouse=True, scope="session")
def exact_inference():
    """Inference under auto stays float32 on every CPU, so that results compare exactly with their references;
    tests/test_precision.py sets what auto does on a CPU with native bf16 itself."""
    from rein_cli.engine import precision

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "CPU_AUTO_BF16", False)
        yield


@pytest.fixture
def tiny_model():
    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    return build_segmentor(**TINY)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The five synthetic datasets, 8 train and 4 val scenes of 128x64."""
    from rein_cli.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, num_train=8, num_val=4, width=128, height=64, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic_root):
    """A run directory: the tiny model trained 3 iterations on the synthetic scenes from the command line."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']")
    assert rein("train", *args, "--iters", 3, "--out", out, "--no-progress") == 0
    return out


@pytest.fixture
def cityscapes_folder(tmp_path):
    """The fake Cityscapes, extracted."""
    sources, raw = fake.cityscapes(tmp_path / "src")
    folder = tmp_path / "extracted"
    for archive in sources:
        zipfile.ZipFile(archive).extractall(folder)
    return folder, raw


@pytest.fixture
def spawn():
    """``spawn(*args)``: ``python ARGS`` with this checkout importable, stdout and stderr captured as text, in a
    process group of its own (as a terminal's foreground job), which is killed whole after the test."""
    started = []

    def start(*args: object) -> subprocess.Popen:
        command = [sys.executable, *map(str, args)]
        pipe = subprocess.PIPE
        env = checkout_env()
        started.append(subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True))
        return started[-1]

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
