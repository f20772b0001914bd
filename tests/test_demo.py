"""`rein demo` end to end on a few scenes and iterations: outputs, reruns, refusals."""

import json

import pytest
from PIL import Image

from rein_cli.demo import run_demo
from rein_cli.errors import ReinError

from .helpers import rein


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = run_demo(out, iters=2, num_train=8, num_val=2, device="cpu", progress=False)
    return out, result


def test_demo_writes_results_chart_and_overlays(demo_out):
    out, result = demo_out
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == [
        "synthetic",
        "synthetic-fog",
        "synthetic-night",
        "synthetic-rain",
        "synthetic-snow",
    ]
    assert all(0 <= d["mIoU"] <= 100 and d["images"] == 2 for d in results["datasets"].values())
    conditions = ["synthetic-fog", "synthetic-night", "synthetic-rain", "synthetic-snow"]
    assert results["trained_on"] == ["synthetic"] and results["mean_of"] == conditions  # clear weather left out
    assert results["mean_mIoU"] == sum(round(results["datasets"][n]["mIoU"], 2) for n in conditions) / 4
    assert "left out, trained on: synthetic" in (out / "report.md").read_text()
    assert (out / "plots" / "synthetic-fog-confusion.png").is_file()
    assert "IoU drop per class (synthetic to synthetic-fog)" in (out / "report.html").read_text(encoding="utf-8")
    assert Image.open(out / "miou.png").size[0] > 300
    overlays = sorted((out / "predictions").glob("*.jpg"))
    width, height = Image.open(overlays[0]).size
    assert len(overlays) == 2 and width > 3 * 512 and height > 5 * 256 + 40  # image | prediction | truth, 5 conditions,
    # with the column and row labels and the legend of classes around them
    assert any("RANDOM weights" in note for note in result.notes)
    marker = json.loads((out / "demo.json").read_text())
    assert marker["config"]["model"]["backbone"] == "vit-tiny" and marker["seconds"] > 0
    assert (out / "run" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_demo_reruns_over_its_own_output_but_not_over_other_files(demo_out, tmp_path, capsys):
    out, _ = demo_out
    run_demo(out, iters=1, num_train=8, num_val=1, device="cpu", progress=False)
    assert json.loads((out / "results.json").read_text())["datasets"]["synthetic"]["images"] == 1
    (tmp_path / "notes.txt").write_text("mine")
    assert rein("demo", "--out", tmp_path, "--iters", "1") == 1
    assert "not empty and is not an earlier demo output" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_named_backbone_needs_weights_on_disk_unless_asked(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ReinError, match=r"pretrained weights for dinov2-s .* not on disk.*--random-weights"):
        run_demo(tmp_path / "out", backbone="dinov2-s", iters=1, num_train=8, num_val=1, progress=False)
    assert not (tmp_path / "out").exists()
    result = run_demo(
        tmp_path / "out",
        backbone="dinov2-s",
        random_weights=True,
        iters=1,
        num_train=8,
        num_val=1,
        device="cpu",
        progress=False,
    )
    assert any("dinov2-s with RANDOM weights" in note for note in result.notes)


def test_the_default_backbone_is_pretrained_dinov2_s_when_it_can_be_had(tmp_path, monkeypatch, caplog):
    import logging
    import time

    import huggingface_hub.constants

    from rein_cli.demo import demo_config

    from .fake_hub import FakeHub
    from .fake_server import unused_port

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg, notes = demo_config(None, False, None, "cpu")  # offline (the tests' default): no attempt at all
    assert cfg.model.backbone == "vit-tiny" and "offline" in notes[0] and "RANDOM weights" in notes[0]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{unused_port()}")  # a Hub that cannot be reached
    start = time.perf_counter()
    cfg, notes = demo_config(None, False, None, "cpu")
    assert cfg.model.backbone == "vit-tiny" and "did not answer within 5 s" in notes[0]
    assert time.perf_counter() - start < 6
    with FakeHub() as hub:
        hub.add_file("timm/vit_small_patch14_dinov2.lvd142m", "model.safetensors", b"weights" * 1000)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        caplog.set_level(logging.INFO, logger="rein_cli.demo")
        cfg, notes = demo_config(None, False, None, "cpu")
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.train.max_iters, cfg.data.batch_size) == (
        "dinov2-s",
        True,
        120,
        4,
    )
    assert "dinov2-s, pretrained" in notes[0]
    assert (
        "downloading dinov2-s: timm/vit_small_patch14_dinov2.lvd142m/model.safetensors (0 MB, licence apache-2.0)"
        in caplog.text
    )
    cfg, _ = demo_config(None, False, 5, "cpu")  # now from the cache, the iterations from the flag
    assert cfg.model.backbone == "dinov2-s" and cfg.train.max_iters == 5


def test_a_failed_or_interrupted_demo_leaves_the_earlier_one_intact(demo_out, monkeypatch, capsys):
    import torch

    from rein_cli.engine import train as train_module

    out, _ = demo_out
    before = (out / "results.json").read_bytes()
    if not torch.cuda.is_available():
        assert rein("demo", "--out", out, "--device", "cuda:0") == 1
        assert "CUDA is not available" in capsys.readouterr().err
        assert (out / "results.json").read_bytes() == before

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, iters=1, num_train=8, num_val=1, device="cpu", progress=False)
    assert (out / "results.json").read_bytes() == before  # the earlier demo is back
    assert not list(out.parent.glob(f".{out.name}.previous"))
