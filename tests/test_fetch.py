"""The one downloader against a local file server: resume, checks, errors, a full disk. No network."""

import errno
import hashlib
import random
import re
from collections import namedtuple

import pytest

from rein_cli import fetch as module
from rein_cli.errors import ReinError
from rein_cli.fetch import Fetched, Limits, fetch

from .fake_server import FakeServer, unused_port

DATA = random.Random(0).randbytes(3 * module.CHUNK + 12345)  # a few chunks, and a part of one
SHA256, MD5 = hashlib.sha256(DATA).hexdigest(), hashlib.md5(DATA).hexdigest()
PATH = "/releases/v1/rein.pth"


@pytest.fixture
def server():
    with FakeServer() as server:
        yield server


def files(folder) -> list[str]:
    """Every file under ``folder``, relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_download_returns_its_size_and_sha256(server, tmp_path):
    url = server.add(PATH, DATA)
    target = tmp_path / "weights" / "rein.pth"
    got = fetch(url, target, headers={"Authorization": "Bearer t"}, progress=False)
    assert got == Fetched(target, len(DATA), SHA256)
    assert target.read_bytes() == DATA and files(tmp_path) == ["weights/rein.pth"]  # the staging folder is gone
    [request] = server.requests
    assert (request.method, request.path, request.range) == ("GET", PATH, None)
    assert request.headers["authorization"] == "Bearer t"


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    cut = len(DATA) // 3
    url = server.add(PATH, DATA, cut_after=cut)
    target = tmp_path / "rein.pth"
    with pytest.raises(ReinError, match=rf"download of {re.escape(url)} stopped after .* of 3\.2 MB.*rerun to resume"):
        fetch(url, target, progress=False)
    assert files(tmp_path) == [".staging/rein.pth.incomplete"]  # never anything at the final path
    assert (tmp_path / ".staging" / "rein.pth.incomplete").read_bytes() == DATA[:cut]
    server.set(PATH, cut_after=None)
    got = fetch(url, target, sha256=SHA256, md5=MD5, progress=False)
    assert [r.range for r in server.requests] == [None, f"bytes={cut}-"]
    assert got == Fetched(target, len(DATA), SHA256)  # the hash covers the resumed part too
    assert target.read_bytes() == DATA and files(tmp_path) == ["rein.pth"]


def test_a_server_that_ignores_the_range_restarts_from_zero(server, tmp_path):
    url = server.add(PATH, DATA, ignore_range=True)
    staged = tmp_path / "stage" / "rein.pth.incomplete"
    staged.parent.mkdir()
    staged.write_bytes(b"x" * 1000)  # appended to, this would give a wrong file
    got = fetch(url, tmp_path / "rein.pth", staging=tmp_path / "stage", sha256=SHA256, progress=False)
    assert server.requests[0].range == "bytes=1000-"
    assert got.sha256 == SHA256 and (tmp_path / "rein.pth").read_bytes() == DATA
    assert files(tmp_path) == ["rein.pth"] and (tmp_path / "stage").is_dir()  # a given staging folder stays, empty


def test_a_complete_part_is_checked_and_moved(server, tmp_path):
    url = server.add(PATH, DATA)
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "rein.pth.incomplete").write_bytes(DATA)
    got = fetch(url, tmp_path / "rein.pth", sha256=SHA256, progress=False)  # the server answers 416
    assert [r.range for r in server.requests] == [f"bytes={len(DATA)}-"] and got.sha256 == SHA256
    assert fetch(url, tmp_path / "again.pth", size=len(DATA), progress=False).size == len(DATA)
    assert len(server.requests) == 2
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "third.pth.incomplete").write_bytes(DATA)
    fetch(url, tmp_path / "third.pth", size=len(DATA), progress=False)  # the size says it is complete
    assert len(server.requests) == 2 and files(tmp_path) == ["again.pth", "rein.pth", "third.pth"]


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_a_checksum_mismatch_removes_the_partial_file(server, tmp_path, kind):
    corrupt = bytes(b ^ 1 for b in DATA)
    url = server.add(PATH, DATA, serve=corrupt)
    expected, actual = (getattr(hashlib, kind)(d).hexdigest() for d in (DATA, corrupt))
    message = rf"rein.pth has {kind.upper()} {actual}, expected {expected}; the partial file was removed, rerun"
    with pytest.raises(ReinError, match=message):
        fetch(url, tmp_path / "rein.pth", **{kind: expected.upper()}, progress=False)  # any case
    assert files(tmp_path) == [] and not (tmp_path / ".staging").exists()


def test_a_size_mismatch_removes_the_partial_file(server, tmp_path):
    url = server.add(PATH, DATA)
    with pytest.raises(ReinError, match=rf"rein.pth is {len(DATA)} bytes on the server, expected 1000 bytes; .* rerun"):
        fetch(url, tmp_path / "rein.pth", size=1000, progress=False)
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "rein.pth.incomplete").write_bytes(DATA[:500])  # a part of some other file
    server.set(PATH, ignore_range=True)
    with pytest.raises(ReinError, match=rf"rein.pth is {len(DATA)} bytes on the server, expected {len(DATA) + 1}"):
        fetch(url, tmp_path / "rein.pth", size=len(DATA) + 1, progress=False)
    assert files(tmp_path) == []
    short = server.add("/short.bin", DATA[:700])
    staged = tmp_path / "s" / "short.bin.incomplete"
    staged.parent.mkdir()
    staged.write_bytes(DATA[:700])  # all the server has (it answers 416), yet less than expected
    with pytest.raises(ReinError, match=r"short.bin is 700 bytes, expected 800 bytes; the partial file was removed"):
        fetch(short, tmp_path / "short.bin", staging=tmp_path / "s", size=800, progress=False)
    assert files(tmp_path) == [] and server.requests[-1].range == "bytes=700-"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, r"access denied to {url} \(HTTP 401\): the file may be private or need a login"),
        (403, r"access denied to {url} \(HTTP 403\): the file may be private or need a login"),
        (404, r"not found: {url} \(HTTP 404\); check the file name, and the server or mirror address"),
        (500, r"downloading {url} failed: HTTP 500 Internal Server Error; the server may be busy, rerun later"),
    ],
)
def test_http_errors_say_what_to_do(server, tmp_path, status, message):
    url = server.add(PATH, DATA, status=status)
    with pytest.raises(ReinError, match=message.format(url=re.escape(url))):
        fetch(url, tmp_path / "rein.pth", progress=False)
    assert files(tmp_path) == [] and not (tmp_path / ".staging").exists()


def test_a_missing_file_and_a_refused_connection(server, tmp_path):
    with pytest.raises(ReinError, match=rf"not found: {re.escape(server.url)}/nothing.pth \(HTTP 404\)"):
        fetch(f"{server.url}/nothing.pth", tmp_path / "nothing.pth", progress=False)
    url = f"http://127.0.0.1:{unused_port()}/rein.pth"
    with pytest.raises(ReinError, match=rf"cannot download {re.escape(url)} \(connection refused\); check the conn"):
        fetch(url, tmp_path / "rein.pth", progress=False)
    assert files(tmp_path) == []


def test_a_server_that_does_not_answer_times_out(server, tmp_path):
    url = server.add(PATH, DATA, delay=1.0)
    with pytest.raises(ReinError, match=r"\(no answer within 0.2 s\); check the connection, then rerun to resume"):
        fetch(url, tmp_path / "rein.pth", limits=Limits(read=0.2), progress=False)


def test_a_present_verified_file_needs_no_request(server, tmp_path):
    url = server.add(PATH, DATA)
    target = tmp_path / "rein.pth"
    target.write_bytes(DATA)
    assert fetch(url, target, sha256=SHA256, md5=MD5, size=len(DATA), progress=False) == Fetched(
        target, len(DATA), SHA256
    )
    assert fetch(url, target, progress=False).sha256 == SHA256  # nothing to check against: kept as it is
    assert server.requests == []
    target.write_bytes(DATA[:-1] + b"!")  # a damaged copy is downloaded again
    assert fetch(url, target, sha256=SHA256, progress=False).sha256 == SHA256
    assert target.read_bytes() == DATA and len(server.requests) == 1


class FailingFile:
    """A file whose writes stop after ``limit`` bytes with ``error`` (a full disk, Ctrl-C)."""

    def __init__(self, f, limit: int, error: BaseException) -> None:
        self.f, self.limit, self.error = f, limit, error

    def write(self, data: bytes) -> int:
        room = self.limit - self.f.tell()
        if len(data) > room:
            self.f.write(data[:room])
            raise self.error
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_full_disk_or_ctrl_c_keeps_the_partial_file(server, tmp_path, monkeypatch, error):
    url = server.add(PATH, DATA)
    limit = 2 * module.CHUNK

    def failing_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115  closed by the wrapper
        return FailingFile(f, limit, error) if "r" not in mode else f

    monkeypatch.setattr(module, "open", failing_open, raising=False)
    target = tmp_path / "rein.pth"
    if isinstance(error, OSError):
        more = re.escape(f"{(len(DATA) - limit) / 1e6:.1f} MB more ({len(DATA) / 1e6:.1f} MB in all)")
        staging = re.escape(str(tmp_path / ".staging"))
        with pytest.raises(
            ReinError, match=rf"the disk of {staging} is full while downloading rein.pth: it needs {more}"
        ):
            fetch(url, target, size=len(DATA), progress=False)
    else:
        with pytest.raises(KeyboardInterrupt):
            fetch(url, target, progress=False)
    assert files(tmp_path) == [".staging/rein.pth.incomplete"]
    assert (tmp_path / ".staging" / "rein.pth.incomplete").read_bytes() == DATA[:limit]
    monkeypatch.undo()
    assert fetch(url, target, sha256=SHA256, progress=False).sha256 == SHA256  # a rerun resumes
    assert server.requests[-1].range == f"bytes={limit}-" and target.read_bytes() == DATA


def test_free_space_is_checked_before_downloading(server, tmp_path, monkeypatch):
    url = server.add(PATH, DATA)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ReinError, match=r"rein.pth needs 3.2 MB but .* has 1.0 kB free; free some space there"):
        fetch(url, tmp_path / "rein.pth", size=len(DATA), progress=False)
    assert files(tmp_path) == []


def test_a_verified_file_is_copied_across_disks(server, tmp_path, monkeypatch):
    url = server.add(PATH, DATA)
    real_replace = module.os.replace

    def replace(src, dst):
        if str(src).endswith(".incomplete"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(module.os, "replace", replace)
    got = fetch(url, tmp_path / "out" / "rein.pth", staging=tmp_path / "elsewhere", sha256=SHA256, progress=False)
    assert got.path.read_bytes() == DATA and files(tmp_path) == ["out/rein.pth"]


def test_the_fake_server_speaks_head_and_ranges(server):
    import urllib.request

    url = server.add("/a.bin", DATA, headers={"ETag": '"abc"'})
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as head:
        assert (head.headers["Content-Length"], head.headers["ETag"], head.read()) == (str(len(DATA)), '"abc"', b"")
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-10"})) as tail:
        assert tail.status == 206 and tail.read() == DATA[-10:]
        assert tail.headers["Content-Range"] == f"bytes {len(DATA) - 10}-{len(DATA) - 1}/{len(DATA)}"
    assert [(r.method, r.range) for r in server.requests] == [("HEAD", None), ("GET", "bytes=-10")]


def test_remote_size_asks_with_head_and_never_fails():
    from rein_cli.fetch import remote_size

    with FakeServer() as server:
        url = server.add("/file.bin", b"x" * 1234)
        assert remote_size(url) == 1234
        assert server.requests[-1].method == "HEAD"
        server.set("/file.bin", status=404)
        assert remote_size(url) is None
    assert remote_size(f"http://127.0.0.1:{unused_port()}/file.bin") is None
