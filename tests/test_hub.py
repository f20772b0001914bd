"""Finding backbone weights in a local Hugging Face cache, and the offline error. No network."""

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
