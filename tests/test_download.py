"""The Cityscapes download against a small local server speaking the site's protocol (no network)."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from rein_cli.data.download import download_cityscapes
from rein_cli.errors import ReinError

from . import fake_datasets as fake
from .helpers import rein


class FakeCityscapes(BaseHTTPRequestHandler):
    packages: ClassVar[dict] = {}  # packageID -> bytes
    ranges: ClassVar[list] = []
    corrupt = False

    def log_message(self, *args):
        pass

    def _logged_in(self) -> bool:
        return "sessionid=ok" in (self.headers.get("Cookie") or "")

    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        if form.get("username") == ["user"] and form.get("password") == ["secret"]:
            self.send_response(302)
            self.send_header("Set-Cookie", "sessionid=ok; Path=/")
            self.send_header("Location", "/")
        else:
            self.send_response(200)  # the login page again
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        url = urlparse(self.path)
        package = int(parse_qs(url.query).get("packageID", ["0"])[0])
        if not self._logged_in() or package not in self.packages:
            self.send_response(302)
            self.send_header("Location", "/login/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.packages[package]
        if url.path == "/md5-sum/":
            body = f"{hashlib.md5(data).hexdigest()}  package{package}.zip\n".encode()
            self.send_response(200)
        else:
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                self.ranges.append(start)
            body = data[start:] if not self.corrupt else b"x" * len(data[start:])
            self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    sources, _ = fake.cityscapes(tmp_path / "src")
    FakeCityscapes.packages = {1: sources[1].read_bytes(), 3: sources[0].read_bytes()}  # gtFine 1, leftImg8bit 3
    FakeCityscapes.ranges, FakeCityscapes.corrupt = [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeCityscapes)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_login_resume_and_md5(server, tmp_path):
    with pytest.raises(ReinError, match="login failed"):
        download_cityscapes(tmp_path / "dl", "user", "wrong", base_url=server, progress=False)
    dest = tmp_path / "dl"
    dest.mkdir()
    whole = FakeCityscapes.packages[3]
    (dest / ".staging").mkdir()
    (dest / ".staging" / "leftImg8bit_trainvaltest.zip.incomplete").write_bytes(whole[: len(whole) // 2])  # interrupted
    paths = download_cityscapes(dest, "user", "secret", base_url=server, progress=False)
    assert [p.name for p in paths] == ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]
    assert paths[1].read_bytes() == whole and FakeCityscapes.ranges == [len(whole) // 2]
    assert sorted(p.name for p in dest.rglob("*")) == ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]


def test_a_corrupt_download_is_not_kept(server, tmp_path):
    FakeCityscapes.corrupt = True
    with pytest.raises(ReinError, match=r"gtFine_trainvaltest.zip has MD5 .* the partial file was removed"):
        download_cityscapes(tmp_path, "user", "secret", base_url=server, progress=False)
    assert not list(tmp_path.glob("*.zip*")) and not (tmp_path / ".staging").exists()


def test_download_then_prepare_from_the_command_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv("REIN_CITYSCAPES_URL", server)
    monkeypatch.setenv("CITYSCAPES_USERNAME", "user")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "secret")
    monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
    assert rein("data", "download", "cityscapes", "--data-root", tmp_path / "root", "--no-progress") == 0
    manifest = json.loads((tmp_path / "root" / "cityscapes" / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 4, "val": 2, "test": 1}
    assert not (tmp_path / "home" / "credentials").exists()  # never stored unless asked


def test_the_library_function_never_asks(server, tmp_path, monkeypatch):
    from rein_cli.data.download import download

    monkeypatch.setenv("REIN_CITYSCAPES_URL", server)
    monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    monkeypatch.delenv("CITYSCAPES_PASSWORD", raising=False)
    manual = download("bdd", tmp_path / "root")
    assert manual.manifest is None and "bdd100k must be downloaded by hand" in manual.instructions
    assert f"prepared into {tmp_path / 'root' / 'bdd100k'}" in manual.instructions
    with pytest.raises(ReinError, match="Cityscapes needs a login: set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD"):
        download("cityscapes", tmp_path / "root")  # nothing waits for an answer
    login = {"username": "user", "password": "secret"}
    result = download("citys", tmp_path / "root", **login, save_credentials=True, progress=False)
    assert result.manifest.dataset == "cityscapes" and result.manifest.counts == {"train": 4, "val": 2, "test": 1}
    store = tmp_path / "home" / "credentials" / "cityscapes.json"
    assert json.loads(store.read_text()) == {"username": "user", "password": "secret"}
    assert store.stat().st_mode & 0o777 == 0o600
    with pytest.raises(
        ReinError, match=r"already prepared \(train 4, val 2, test 1\).*rein data download cityscapes --overwrite"
    ):
        download("cityscapes", tmp_path / "root", progress=False)  # refused before anything is downloaded
    again = download("cityscapes", tmp_path / "root", overwrite=True, progress=False)  # the saved login is used
    assert again.manifest.path == result.manifest.path


def test_manual_instructions_name_only_what_they_ask_for(tmp_path):
    from rein_cli.data.download import download

    bdd = download("bdd", tmp_path).instructions
    assert "--from bdd100k_images_10k.zip --from bdd100k_sem_seg_labels_trainval.zip" in bdd
    assert "10k_images_train.zip" not in bdd  # accepted by prepare, but not what the instructions ask for
    assert "--from mapillary-vistas-dataset_public_v2.0.zip" in download("map", tmp_path).instructions
