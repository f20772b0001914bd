"""Names -> ready models, against a Hugging Face Hub and a release server on 127.0.0.1: pull, caches, revisions,
offline and failing downloads, evaluation by name, hf:// checkpoints and push."""

import hashlib
import io
import json
import shutil
import time

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from rein_cli.engine.convert import to_official
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import build_segmentor
from rein_cli.zoo import pull as pull_module
from rein_cli.zoo.releases import DEFAULT_RELEASE, RELEASES, Release, Reported, Setting

from .fake_hub import FakeHub
from .helpers import VIT, errors, rein

DINOV2_S = "timm/vit_small_patch14_dinov2.lvd142m"
VIT_TINY = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
RELEASE_PATH = "TINY%2BDINOv2-S/iter_40000_published.pth"


def timm_weights(arch: str, **kwargs) -> bytes:
    """A timm checkpoint as the Hub serves it (native patch size and position grid)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    return safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def release_bytes():
    """An official-format release file (Rein + Mask2Former head) for a tiny DINOv2-S, and the model it came from."""
    torch.manual_seed(1)
    model = build_segmentor("dinov2-s", crop_size=64, feature_indices=[0, 1, 2, 3], backbone_kwargs=VIT)
    with torch.no_grad():
        model.backbone.reins.scale.fill_(0.3)
    state = {to_official(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    buffer = io.BytesIO()
    torch.save({"meta": {"iter": 40000}, "state_dict": state}, buffer)
    return buffer.getvalue(), model


@pytest.fixture
def world(tmp_path, monkeypatch, release_bytes):
    """A Hub with the tiny DINOv2-S and vit-tiny weights, a release server with the tiny release, an empty Hub cache
    and $REIN_HOME, the Hub online, and `rein-tiny-dinov2-s` as dinov2-s's default release."""
    with FakeHub() as hub:
        hub.add_file(DINOV2_S, "model.safetensors", timm_weights("vit_small_patch14_dinov2", **VIT), "1" * 40)
        hub.add_file(VIT_TINY, "model.safetensors", timm_weights("vit_tiny_patch16_224"), "2" * 40)
        hub.add("/releases/" + RELEASE_PATH, release_bytes[0])
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("REIN_RELEASES_URL", hub.url + "/releases")
        monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        release = Release(
            "rein-tiny-dinov2-s",
            RELEASE_PATH,
            "dinov2-s",
            64,
            "gta5",
            "a tiny DINOv2-S release for tests",
            {"feature_indices": Setting((0, 1, 2, 3), "test"), "backbone_kwargs": Setting(VIT, "test")},
            {"synthetic-fog": (Reported(12.5, "val", "test fixture"),)},
        )
        monkeypatch.setitem(RELEASES, release.name, release)
        monkeypatch.setitem(DEFAULT_RELEASE, "dinov2-s", release.name)
        yield hub, release, tmp_path


def go_offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_pull_a_backbone_converts_once_and_reuses_the_cache(world, capsys):
    hub, _, tmp_path = world
    assert rein("pull", "vit-tiny") == 0
    assert "backbone vit-tiny ready" in capsys.readouterr().out
    digest = hashlib.sha256(hub.repos[VIT_TINY]["2" * 40]["model.safetensors"]).hexdigest()
    converted = tmp_path / "home" / "weights" / "vit-tiny" / f"{digest[:16]}-crop512-v1.safetensors"
    assert converted.is_file()  # keyed by the source's hash, the crop and the conversion version
    from safetensors.torch import load_file

    assert load_file(str(converted))["pos_embed"].shape == (1, 1 + 32 * 32, 192)  # 14x14 -> the 512 crop's grid
    count = len(hub.requests)
    assert rein("pull", "vit-tiny") == 0  # everything cached: no request at all
    assert len(hub.requests) == count
    model = build_segmentor("vit-tiny", crop_size=512, pretrained=True, head="fpn")
    assert model.config.backbone_revision == "2" * 40  # the Hub commit is recorded, never a local path
    torch.testing.assert_close(model.backbone.vit.pos_embed, load_file(str(converted))["pos_embed"], rtol=0, atol=0)


def test_a_pinned_revision_is_used_even_when_main_moves(world):
    hub, _, _ = world
    old = hub.main[DINOV2_S]
    hub.add_file(
        DINOV2_S,
        "model.safetensors",
        timm_weights("vit_small_patch14_dinov2", depth=4, embed_dim=32, num_heads=2, init_values=0.5),
        "3" * 40,
    )
    pulled = pull_module.pull_backbone("dinov2-s", crop=64, revision=old, timm_kwargs=VIT)
    assert pulled.revision == old
    assert any(r.path.endswith(f"/resolve/{old}/model.safetensors") for r in hub.requests)
    latest = pull_module.pull_backbone("dinov2-s", crop=64, timm_kwargs=VIT)
    assert latest.revision == "3" * 40 and latest.path != pulled.path  # another source, another converted file


def test_pull_an_adapter_then_everything_works_offline(world, monkeypatch, release_bytes):
    hub, release, tmp_path = world
    assert rein("pull", release.name, "--no-progress") == 0
    folder = tmp_path / "home" / "zoo" / "models" / release.name
    config = json.loads((folder / "config.json").read_text())
    sha = hashlib.sha256(release_bytes[0]).hexdigest()
    assert config["provenance"] == {
        "adapter": release.name,
        "source": f"{hub.url}/releases/{RELEASE_PATH}",
        "sha256": sha,
        "size": len(release_bytes[0]),
    }
    assert config["model"]["backbone_revision"] == "1" * 40 and config["model"]["feature_indices"] == [0, 1, 2, 3]
    assert config["normalization"]["mean"] == [0.485, 0.456, 0.406]  # as every official model normalises
    hashes = json.loads((tmp_path / "home" / "zoo" / "hashes.json").read_text())
    assert hashes[release.name]["sha256"] == sha  # no published hash: the first download's is recorded
    go_offline(monkeypatch)
    from rein_cli.engine.checkpoint import load_segmentor

    loaded = load_segmentor(folder)
    x = torch.randn(1, 3, 64, 64)
    expected = release_bytes[1].eval()
    expected.backbone.vit.load_state_dict(loaded.backbone.vit.state_dict())  # the Hub's backbone, not the fixture's
    torch.testing.assert_close(loaded.semantic_scores(x), expected.semantic_scores(x), rtol=0, atol=0)


def test_offline_errors_name_what_is_missing_and_how_to_get_it(world, monkeypatch, capsys, synthetic_root):
    hub, release, _ = world
    go_offline(monkeypatch)
    assert rein("pull", "vit-tiny") == 1
    assert "Hub is offline (HF_HUB_OFFLINE=1 or --offline); run `rein pull vit-tiny` with a" in errors(capsys)
    args = ["--target", "synthetic-fog", "--data-root", synthetic_root, "--no-progress"]
    assert rein("eval", "--backbone", "dinov2-s", *args) == 1
    err = errors(capsys)
    assert err.startswith("error: missing before evaluation can start:")
    assert f"the adapter {release.name}: `rein pull {release.name}`" in err and "\n" not in err
    assert not hub.requests  # nothing was asked of the network


def test_everything_missing_is_listed_before_anything_is_downloaded(world, capsys, tmp_path):
    hub, release, _ = world
    start = time.perf_counter()
    assert rein("eval", "--backbone", "dinov2-s", "--target", "bdd,citys", "--data-root", tmp_path / "none") == 1
    err = errors(capsys)
    assert time.perf_counter() - start < 10
    for piece in ("the dataset bdd100k", "the dataset cityscapes", f"the adapter {release.name}"):
        assert piece in err
    assert not hub.requests
    assert rein("eval", "--backbone", "mae-l", "--target", "bdd") == 1
    assert "no released Rein adapter for mae-l; train one with `rein train --backbone mae-l" in errors(capsys)
    assert rein("eval", "--adapter", "rein-resnet50-gta", "--target", "bdd", "--data-root", tmp_path) == 1
    assert "ResNet backbones are not implemented" in errors(capsys)


def test_access_denied_and_not_found(world, capsys, monkeypatch):
    hub, release, _ = world
    hub.denied[VIT_TINY] = 401
    assert rein("pull", "vit-tiny") == 1
    assert "no access to timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in (err := errors(capsys))
    assert "hf auth login" in err
    del hub.files["/releases/" + RELEASE_PATH]
    assert rein("pull", release.name, "--no-progress") == 1
    assert f"not found: {hub.url}/releases/{RELEASE_PATH} (HTTP 404)" in errors(capsys)


def test_an_interrupted_download_resumes_and_a_corrupt_one_is_rejected(world, capsys, release_bytes):
    hub, release, tmp_path = world
    path = "/releases/" + RELEASE_PATH
    hub.set(path, cut_after=100_000)
    assert rein("pull", release.name, "--no-progress") == 1
    assert "rerun to resume" in errors(capsys)
    staged = list((tmp_path / "home" / "zoo").rglob("*.incomplete"))
    assert len(staged) == 1 and staged[0].stat().st_size == 100_000
    assert not (tmp_path / "home" / "zoo" / "releases" / release.name / release.file).exists()
    hub.set(path, cut_after=None)
    assert rein("pull", release.name, "--no-progress") == 0
    assert any(r.range == "bytes=100000-" for r in hub.requests)  # resumed where it stopped
    # The first download's hash was recorded: a later download with other bytes is refused and not converted.
    for folder in ("models", "releases"):
        shutil.rmtree(tmp_path / "home" / "zoo" / folder)
    corrupt = bytearray(release_bytes[0])
    corrupt[5000] ^= 0xFF  # in the zip's records: not a PyTorch file any more
    hub.set(path, serve=bytes(corrupt))
    assert rein("pull", release.name, "--no-progress") == 1
    assert "sent a truncated or damaged PyTorch file" in (err := errors(capsys)) and "it was deleted" in err
    assert not list((tmp_path / "home" / "zoo").rglob("*.incomplete"))
    corrupt = bytearray(release_bytes[0])
    corrupt[len(corrupt) // 2] ^= 0xFF  # in a tensor: still a release file, but not the recorded one
    hub.set(path, serve=bytes(corrupt))
    assert rein("pull", release.name, "--no-progress") == 1
    assert "differs from the one recorded" in (err := errors(capsys)) and "--refresh" in err
    assert len(list((tmp_path / "home" / "zoo").rglob("*.incomplete"))) == 1  # kept in staging, for --refresh
    assert not (tmp_path / "home" / "zoo" / "models" / release.name).exists()


def test_eval_by_backbone_name_pulls_evaluates_and_reports(world, synthetic_root, tmp_path, capsys):
    hub, release, _ = world
    out = tmp_path / "eval"
    args = ["--target", "synthetic-fog", "--data-root", synthetic_root, "--mode", "whole", "--out", out]
    assert rein("eval", "--backbone", "dinov2-s", *args, "--no-progress") == 0
    printed = capsys.readouterr()
    assert "synthetic-fog" in printed.out and "published   12.5 (val, test fixture)" in printed.out
    assert f"model: {release.name} (the default release of dinov2-s)" in printed.err
    results = json.loads((out / "results.json").read_text())
    entry = results["datasets"]["synthetic-fog"]
    assert entry["model"] == release.name and entry["reported"] == [
        {"mIoU": 12.5, "split": "val", "source": "test fixture"}
    ]
    assert results["trained_on"] == ["gta5"] and results["mean_of"] == ["synthetic-fog"]  # the release's source
    assert "12.5 (val, test fixture)" in (out / "report.md").read_text()  # as published
    (model,) = results["models"]
    assert model["adapter"] == release.name and model["source"].endswith(RELEASE_PATH)
    assert model["sha256"] == hashlib.sha256(hub.files["/releases/" + RELEASE_PATH].data).hexdigest()
    assert model["revision"] == "1" * 40 and model["backbone"] == "dinov2-s"
    count = len(hub.requests)
    assert rein("eval", "--adapter", release.name, *args, "--no-progress") == 0  # pulled once: no network now
    assert len(hub.requests) == count


def test_checkpoints_on_the_hub_work_wherever_a_checkpoint_does(world, trained, synthetic_root, tmp_path, capsys):
    hub, _, _ = world
    checkpoint = trained / "checkpoints" / "last"
    commit = hub.add_file("lab/tiny-rein", "config.json", (checkpoint / "config.json").read_bytes(), "4" * 40)
    hub.add_file("lab/tiny-rein", "model.safetensors", (checkpoint / "model.safetensors").read_bytes(), commit)
    out = tmp_path / "ev"
    args = ["--target", "synthetic", "--data-root", synthetic_root, "--mode", "whole", "--no-progress"]
    assert rein("eval", f"hf://lab/tiny-rein@{commit}", *args, "--out", out) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"][0]["hub_repo"] == "lab/tiny-rein" and results["models"][0]["hub_revision"] == commit
    local = tmp_path / "local"
    assert rein("eval", checkpoint, *args, "--out", local) == 0
    ours = json.loads((local / "results.json").read_text())["datasets"]["synthetic"]["mIoU"]
    assert results["datasets"]["synthetic"]["mIoU"] == ours  # the same weights, from the Hub
    image = synthetic_root / "synthetic" / "images" / "val" / "000000.jpg"
    assert rein("predict", "hf://lab/tiny-rein", image, "--out", tmp_path / "pred", "--mode", "whole") == 0
    assert (tmp_path / "pred" / "labels" / "000000.png").is_file()
    from .helpers import sets

    run = tmp_path / "run"
    train = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.init_from=hf://lab/tiny-rein")
    assert rein("train", *train, "--iters", 1, "--out", run, "--no-progress") == 0
    assert "initialised from hf://lab/tiny-rein" in capsys.readouterr().err


def test_push_uploads_the_checkpoint_with_a_model_card(trained, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, *, private=False, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        from pathlib import Path

        calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls["upload"] = (repo_id, commit_message)
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    checkpoint = trained / "checkpoints" / "last"
    assert rein("push", checkpoint, "lab/tiny-rein", "--private") == 0
    assert calls["create"] == ("lab/tiny-rein", True, True)
    assert set(calls["files"]) == {"config.json", "model.safetensors", "README.md"}
    assert calls["files"]["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    card = calls["files"]["README.md"].decode()
    assert "license: apache-2.0" in card and "rein eval hf://lab/tiny-rein --target cityscapes" in card
    assert "| synthetic-fog |" in card  # the run's evaluation
    assert "The training data (synthetic): MIT." in card and "max_iters: 3" in card  # its terms, the recipe
    assert (checkpoint / "README.md").read_text() != card  # the folder itself is not changed
    assert rein("push", checkpoint, "not a repo") == 1


def test_rein_models_lists_what_is_on_disk(world, capsys):
    _, release, _ = world
    assert rein("models") == 0
    before = capsys.readouterr().out
    assert "rein-dinov2-l-gta" in before and "cityscapes val 66.7 [README 2024]" in before
    assert "unsupported: ResNet backbones are not implemented" in before
    assert rein("pull", release.name, "--no-progress") == 0
    capsys.readouterr()
    from rein_cli.zoo.listing import list_adapters

    row = next(r for r in list_adapters() if r["name"] == release.name)
    assert row["pulled"] and row["checksum"] == "first download" and row["bytes"] > 0


def test_the_release_table_is_complete_and_consistent():
    from rein_cli.models.backbone import BACKBONES

    for release in RELEASES.values():
        assert release.unsupported or (release.backbone in BACKBONES and release.path and release.file)
        for figures in release.reported.values():
            assert figures and all(r.split in ("val", "test") and r.source for r in figures)
    assert RELEASES["rein-dinov2-l-gta"].path == "GTAV/iter_40000_published.pth"
    assert RELEASES["rein-dinov2-s-gta"].path == "GTAV%2BViT-Small/iter_40000_published.pth"
    assert RELEASES["rein-dinov2-l-citys"].crop == 1024
    test_figures = [
        r for release in RELEASES.values() for f in release.reported.values() for r in f if r.split == "test"
    ]
    assert test_figures and all("test server" in r.source for r in test_figures)  # never a bare test figure
    assert {name: RELEASES[name].backbone for name in DEFAULT_RELEASE.values()} == {
        "rein-dinov2-l-gta": "dinov2-l",
        "rein-dinov2-s-gta": "dinov2-s",
        "rein-dinov2-b-gta": "dinov2-b",
        "rein-eva02-l-gta": "eva02-l",
        "rein-convnext-l-gta": "convnext-l",
    }


def test_an_unknown_name_suggests_the_closest(capsys):
    assert rein("pull", "rein-dinov2-l-gtav") == 1
    assert 'unknown model "rein-dinov2-l-gtav" (did you mean "rein-dinov2-l-gta"?)' in errors(capsys)
    with pytest.raises(ReinError, match="unknown released adapter"):
        pull_module.find_release("nope")
