"""The Hugging Face Hub when the network fails: a refused connection and a server that accepts and never answers
end in rein's one line, quickly, from the command line (a real process, as a user runs it); offline messages name
`rein pull NAME`, and following them works."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from .fake_hub import FakeHub
from .fake_server import unused_port
from .helpers import errors, rein

ROOT = Path(__file__).resolve().parent.parent
HUB_NOISE = ("Retrying in", "thrown while requesting", "Traceback", "HTTP Request")


def run_rein(tmp_path, endpoint: str, *args: object, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m rein_cli ARGS`` with the Hub at ``endpoint``, online, and empty caches; its output and seconds."""
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    environ |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "REIN_HOME": str(tmp_path / "home")}
    environ |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")])), **env}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rein_cli", *map(str, args)], capture_output=True, text=True, env=environ, timeout=300
    )
    return done, time.monotonic() - start


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def image(synthetic_root) -> Path:
    return synthetic_root / "synthetic" / "images" / "val" / "000000.jpg"


DINOV2_S = "model.safetensors of timm/vit_small_patch14_dinov2.lvd142m"
COMMANDS = {  # the command, and the file of which Hub repo it needs first
    "pull": (lambda tmp, image, root: ["pull", "dinov2-s"], DINOV2_S),
    "predict": (
        lambda tmp, image, root: ["predict", "hf://my-lab/rein-x", image, "--out", tmp / "out"],
        "config.json of my-lab/rein-x",
    ),
    "train": (
        lambda tmp, image, root: ["train", "--backbone", "dinov2-s", "--set", f"data.root={root}", "--out", tmp / "r"],
        DINOV2_S,
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_connection_is_one_line_within_seconds(command, tmp_path, image, synthetic_root):
    """Without a network huggingface_hub printed ~24 retry warnings (each twice) for ~26 s before rein's line."""
    port = unused_port()
    args, what = COMMANDS[command]
    done, seconds = run_rein(tmp_path, f"http://127.0.0.1:{port}", *args(tmp_path, image, synthetic_root))
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in lines(done.stderr) if "error" in line.lower()]
    assert line.startswith(f"error: could not reach the Hugging Face Hub at http://127.0.0.1:{port} for {what}")
    assert line.endswith("the connection was refused; check the connection and HF_ENDPOINT, then rerun")
    assert not any(noise in done.stderr for noise in HUB_NOISE), done.stderr
    assert seconds < 45, seconds  # the command's own start-up (torch, timm) is most of it
    if command != "train":  # train says what it prepares first; these print nothing else
        assert lines(done.stderr) == [line] and done.stdout == ""


def test_a_hub_that_accepts_and_never_answers_is_an_error_within_a_minute(tmp_path):
    """`rein pull clip-l` against such an endpoint printed nothing for 410 s (a 10 s request, then six 60 s
    retries): now one line after huggingface_hub's default 10 s answer timeout, retried never."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # connections are accepted by the system; nothing ever reads or answers them
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        done, seconds = run_rein(tmp_path, url, "pull", "clip-l")
    assert done.returncode == 1 and seconds < 60, (seconds, done.stderr)
    assert lines(done.stderr) == [
        f"error: could not reach the Hugging Face Hub at {url} for model.safetensors of "
        "timm/vit_large_patch14_clip_224.openai: no answer within 10 s; check the connection and HF_ENDPOINT, "
        "then rerun, or allow it longer with HF_HUB_ETAG_TIMEOUT=SECONDS"
    ]


def test_the_answer_timeout_follows_hf_hub_etag_timeout(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        done, seconds = run_rein(
            tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}", "pull", "vit-tiny", HF_HUB_ETAG_TIMEOUT="2"
        )
    assert "no answer within 2 s" in done.stderr and seconds < 40, (seconds, done.stderr)


def test_the_library_keeps_huggingface_hubs_retry_warnings_quiet_too(tmp_path, monkeypatch, caplog):
    """Not only the command line: a Python user of rein gets the one error, no retry chatter, quickly."""
    import logging

    import huggingface_hub.utils.logging  # configures its logger, as any use of huggingface_hub does

    from rein_cli.errors import ReinError
    from rein_cli.hub import download_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(ReinError, match="the connection was refused"):
        download_file("timm/x", "config.json")
    assert time.monotonic() - start < 10
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub") and r.levelno >= logging.WARNING]
    assert hub_logger.level == level  # restored for the user's own use of huggingface_hub


def test_a_cached_file_is_used_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    from rein_cli.hub import download_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with FakeHub() as hub:
        hub.add_file("lab/x", "config.json", b"{}")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        first = download_file("lab/x", "config.json")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")
    assert download_file("lab/x", "config.json") == first  # as huggingface_hub itself falls back to its cache


def test_offline_train_names_rein_pull_and_following_it_works(tmp_path, monkeypatch, capsys, synthetic_root):
    """`rein --offline train --backbone dinov2-s` suggested `hf download timm/... model.safetensors`; docs/hub.md
    promises `rein pull NAME`. Followed against a Hub (the real DINOv2-S shapes, random values), it works."""
    import timm
    from safetensors.torch import save

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
    args = ["train", "--backbone", "dinov2-s", "--iters", "1", "--batch-size", "2", "--out", tmp_path / "run"]
    args += ["--set", f"data.root={synthetic_root}", "--set", "model.crop_size=64", "--set", "model.head=fpn"]
    args += ["--set", "data.num_workers=0", "--set", "eval.mode=whole", "--no-progress"]
    assert rein("--offline", *args) == 1
    message = errors(capsys)
    assert "run `rein pull dinov2-s` with a connection, then rerun" in message and "hf download" not in message
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    with FakeHub() as hub:
        hub.add_file("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors", save(model.state_dict()))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        assert rein("pull", "dinov2-s") == 0
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")  # no Hub any more
    assert rein("--offline", *args) == 0, errors(capsys)
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_a_checkpoint_pinned_to_a_hub_commit_names_the_pull_of_that_commit(tmp_path, monkeypatch, capsys):
    """A checkpoint records the Hub commit of its backbone's weights; offline, the message names `rein pull NAME
    --revision COMMIT`, and that command fetches exactly it even after main moved."""
    import timm
    import torch
    from safetensors.torch import save

    from rein_cli.errors import ReinError
    from rein_cli.models.segmentor import pretrained_weights_path

    repo = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
    with pytest.raises(ReinError) as caught:
        pretrained_weights_path("vit-tiny", download=True, revision="7" * 40)
    assert f"run `rein pull vit-tiny --revision {'7' * 40}` with a connection" in str(caught.value)
    with FakeHub() as hub:
        tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict()
        hub.add_file(repo, "model.safetensors", save(tiny), "7" * 40)
        hub.add_file(repo, "model.safetensors", save({"moved": torch.zeros(1)}), "8" * 40)  # main, since
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        assert rein("pull", "vit-tiny", "--revision", "7" * 40) == 0
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    found = pretrained_weights_path("vit-tiny", download=True, revision="7" * 40)
    assert f"/snapshots/{'7' * 40}/model.safetensors" in found


def test_an_offline_hf_checkpoint_names_hf_download_of_both_files_and_following_it_works(
    tmp_path, monkeypatch, capsys, trained, image
):
    """`hf download` as the message words it (huggingface_hub's own command line, against the same Hub), then
    the offline command works from the Hugging Face cache."""
    import re
    import shlex

    checkpoint = trained / "checkpoints" / "last"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = ["predict", "hf://my-lab/rein-x", image, "--out", tmp_path / "pred", "--mode", "whole"]
    assert rein(*args) == 1
    message = errors(capsys)
    command = re.search(r"run `(hf download [^`]+)` where there is a connection, then rerun", message)[1]
    assert command == "hf download my-lab/rein-x config.json model.safetensors"
    with FakeHub() as hub:
        for name in ("config.json", "model.safetensors"):
            hub.add_file("my-lab/rein-x", name, (checkpoint / name).read_bytes())
        environ = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        environ |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        hf = Path(sys.executable).parent / "hf"
        done = subprocess.run([hf, *shlex.split(command)[1:]], env=environ, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert rein(*args) == 0, errors(capsys)
    assert list((tmp_path / "pred").rglob("*.png"))
