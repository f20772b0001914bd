"""Finding backbone weights in a local Hugging Face cache, and the offline error. No network."""

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from rein_cli.errors import ReinError
from rein_cli.hub import cached_file, download_file
from rein_cli.models.segmentor import pretrained_weights_path


def fake_cache(root, repo_id: str, tensors: dict) -> None:
    """The Hub cache layout: models--org--name/{refs/main, snapshots/<rev>/model.safetensors}."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    save_file(tensors, str(folder / "snapshots" / revision / "model.safetensors"))


def test_cached_weights_are_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert cached_file("timm/vit_small_patch14_dinov2.lvd142m") is None
    fake_cache(tmp_path, "timm/vit_small_patch14_dinov2.lvd142m", {"w": torch.zeros(2)})
    found = cached_file("timm/vit_small_patch14_dinov2.lvd142m")
    assert found is not None and found.name == "model.safetensors" and found.is_file()
    assert pretrained_weights_path("dinov2-s", download=False) == str(found)
    assert pretrained_weights_path("dinov2-s", download=True) == str(found)  # the cache is used before any download


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ReinError, match=r"could not get model.safetensors of timm/x.*hf download timm/x"):
        download_file("timm/x", cache_dir=tmp_path)


def test_download_from_a_local_hub_then_offline(tmp_path, monkeypatch):
    """The real download path (huggingface_hub) against a small Hub-speaking server on 127.0.0.1."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from safetensors.torch import load_file

    save_file({"w": torch.arange(4.0)}, str(tmp_path / "src.safetensors"))
    payload = (tmp_path / "src.safetensors").read_bytes()

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _headers(self, found: bool) -> None:
            self.send_response(200 if found else 404)
            self.send_header("X-Repo-Commit", "a" * 40)
            if found:
                self.send_header("ETag", f'"{hashlib.sha256(payload).hexdigest()}"')
                self.send_header("Content-Length", str(len(payload)))
            else:
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):
            self._headers(self.path.endswith("/resolve/main/model.safetensors"))

        def do_GET(self):
            found = self.path.endswith("/resolve/main/model.safetensors")
            self._headers(found)
            if found:
                self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:
        path = download_file("timm/fake", cache_dir=tmp_path / "cache", endpoint=url)
        assert torch.equal(load_file(str(path))["w"], torch.arange(4.0))
        with pytest.raises(ReinError, match=r"other\.safetensors is not in timm/fake on the Hugging Face Hub"):
            download_file("timm/fake", "other.safetensors", cache_dir=tmp_path / "cache", endpoint=url)
    finally:
        server.shutdown()
    assert cached_file("timm/fake", cache_dir=tmp_path / "cache") == path  # later runs need no network


# ----------------------------------------------------------------------------- backbones as timm has them


def test_every_backbone_maps_to_the_repo_timm_loads_it_from():
    """Computed from timm's own pretrained configs now, not a copy: a timm that moves a repo moves ours."""
    import timm
    from timm.models import get_pretrained_cfg

    from rein_cli.models.backbone import BACKBONES, create_timm_model

    for name, spec in BACKBONES.items():
        assert spec.hub_repo == get_pretrained_cfg(f"{spec.arch}.{spec.tag}").hf_hub_id, name
    clip = BACKBONES["clip-l"]
    assert clip.hub_repo == "timm/vit_large_patch14_clip_224.openai"  # the repo timm shares with the GELU model
    with torch.device("meta"):  # while the model built stays CLIP's own QuickGELU one, as the official code's
        model = create_timm_model("clip-l", 512)
    assert isinstance(model.blocks[0].mlp.act, timm.layers.activations.QuickGELU)


def openai_clip_layout(state: dict) -> dict:
    """A timm CLIP ViT state dict in OpenAI CLIP's layout (``visual.*`` beside a text tower), as the
    ``pytorch_model.bin`` of timm's OpenAI CLIP repos holds it."""
    out = {"token_embedding.weight": torch.ones(3, 2), "transformer.resblocks.0.attn.in_proj_weight": torch.ones(6, 2)}
    names = (
        ("patch_embed.proj", "conv1"),
        ("blocks.", "transformer.resblocks."),
        ("norm_pre", "ln_pre"),
        ("norm1", "ln_1"),
        ("norm2", "ln_2"),
        ("attn.qkv.", "attn.in_proj_"),
        ("attn.proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
    )
    for key, value in state.items():
        if key == "cls_token":
            key, value = "class_embedding", value[0, 0]
        elif key == "pos_embed":
            key, value = "positional_embedding", value[0]
        elif key.startswith("norm."):
            key = key.replace("norm.", "ln_post.")
        for old, new in names:
            key = key.replace(old, new)
        out[f"visual.{key}"] = value
    out["visual.proj"] = torch.ones(state["cls_token"].shape[-1], 4)
    return out


def pull_from(hub_files: dict, name: str, tmp_path, monkeypatch, **kwargs):
    """``pull_backbone(name)`` against a fresh fake Hub holding ``hub_files`` ({file: bytes}) in ``name``'s repo,
    with an empty Hub cache and $REIN_HOME: the converted weights, and the Hub's requests."""
    from rein_cli.models.backbone import backbone_spec
    from rein_cli.zoo.pull import pull_backbone

    from .fake_hub import FakeHub

    with FakeHub() as hub:
        for file, data in hub_files.items():
            hub.add_file(backbone_spec(name).hub_repo, file, data, "5" * 40)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        pulled = pull_backbone(name, crop=64, **kwargs)
    from safetensors.torch import load_file

    return load_file(str(pulled.path)), hub.requests, pulled


def torch_bytes(value) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "arch"), [("dinov2-s", "vit_small_patch14_dinov2"), ("clip-l", None)])
def test_a_repo_with_only_pytorch_model_bin_is_pulled_into_the_same_weights(name, arch, tmp_path, monkeypatch):
    """timm's order: model.safetensors, else pytorch_model.bin (loaded with weights_only=True); both routes give the
    same converted weights. For CLIP-L the .bin is in OpenAI's layout, renamed by timm's own filter."""
    import timm
    from safetensors.torch import save

    from .helpers import VIT

    torch.manual_seed(0)
    model = timm.create_model(arch or "vit_large_patch14_clip_quickgelu_224", pretrained=False, num_classes=0, **VIT)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pickled = openai_clip_layout(state) if name == "clip-l" else state
    safe, _, _ = pull_from({"model.safetensors": save(state)}, name, tmp_path / "a", monkeypatch, timm_kwargs=VIT)
    binary, requests, pulled = pull_from(
        {"pytorch_model.bin": torch_bytes(pickled)}, name, tmp_path / "b", monkeypatch, timm_kwargs=VIT
    )
    assert [r.path.rsplit("/", 1)[-1] for r in requests if r.method == "HEAD"][:2] == [
        "model.safetensors",
        "pytorch_model.bin",
    ]
    assert pulled.revision == "5" * 40 and set(binary) == set(safe)
    for key in safe:
        torch.testing.assert_close(binary[key], safe[key], rtol=0, atol=0, msg=key)
    assert binary["pos_embed"].shape[1] == 1 + 4 * 4  # converted for the 64 crop: 4 x 4 patches of 16


class Payload:
    """An object of the test's own: unpickling it would run this module's code."""


@pytest.mark.parametrize(
    ("extra", "said"),
    [(Payload(), "not a PyTorch file of tensors that loads safely"), (3, "not a dictionary of tensors")],
)
def test_a_pickle_that_is_not_only_tensors_is_refused_without_advice_to_unpickle(extra, said, tmp_path, monkeypatch):
    payload = torch_bytes({"w": torch.zeros(2), "extra": extra})
    with pytest.raises(ReinError) as caught:
        pull_from({"pytorch_model.bin": payload}, "vit-tiny", tmp_path, monkeypatch)
    message = str(caught.value)
    assert "pytorch_model.bin" in message and said in message and "download it again" in message
    assert "weights_only=False" not in message


def test_a_repo_with_neither_file_names_both(tmp_path, monkeypatch):
    with pytest.raises(ReinError, match=r"holds neither model\.safetensors nor pytorch_model\.bin; check the name"):
        pull_from({"README.md": b"hi"}, "vit-tiny", tmp_path, monkeypatch)


def test_a_bad_download_is_fetched_again_after_deleting_the_file_the_error_names(tmp_path, monkeypatch, capsys):
    """The remedy followed: the Hub serves a bad file, then a good one at the same commit; deleting what the error
    names and rerunning `rein pull` gets the good one (the Hub cache's link alone would keep the bad file)."""
    import re

    import timm

    from .fake_hub import FakeHub
    from .helpers import errors, rein

    repo = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    good = torch_bytes(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict())
    with FakeHub() as hub:
        hub.add_file(repo, "pytorch_model.bin", torch_bytes({"w": Payload()}), "6" * 40)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        assert rein("pull", "vit-tiny") == 1
        message = errors(capsys)
        assert "weights_only=False" not in message
        named = re.search(r"delete (\S+) and rerun to download it again", message)
        hub.add_file(repo, "pytorch_model.bin", good, "6" * 40)  # the Hub's file is good again
        assert rein("pull", "vit-tiny") == 1  # a rerun alone reads the same bad file from the cache
        capsys.readouterr()
        Path(named[1]).unlink()
        assert rein("pull", "vit-tiny") == 0
    assert "backbone vit-tiny ready" in capsys.readouterr().out


def test_hub_md_names_each_backbones_repo_as_timm_has_it():
    import itertools
    import re

    from rein_cli.models.backbone import BACKBONES

    text = (Path(__file__).resolve().parent.parent / "docs" / "hub.md").read_text()
    table = text.split("## Backbones", 1)[1].split("\n\n**", 1)[0]
    named = set()
    for cell in re.findall(r"`(timm/[^`]+)`", table):  # {a,b} as a shell expands it
        parts = [p.split(",") if i % 2 else [p] for i, p in enumerate(re.split(r"[{}]", cell))]
        named |= {"".join(choice) for choice in itertools.product(*parts)}
    assert named == {spec.hub_repo for spec in BACKBONES.values()}


def test_rein_models_shows_the_size_on_disk_and_question_marks_before_a_download(tmp_path, monkeypatch, capsys):
    from .helpers import rein

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    fake_cache(tmp_path, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", {"w": torch.zeros(4000)})  # 16 kB
    assert rein("models") == 0
    rows = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()[2:16]}
    assert rows["vit-tiny"] == ["yes", "16", "kB"] and rows["dinov2-l"][:2] == ["no", "?"]
