"""Downloads rein can trust, against servers on 127.0.0.1 that misbehave: release files checked before anything is
kept or recorded, staging files of their own and locked, bounded waits, the file-size limit named, `--refresh`."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from rein_cli import fetch as fetch_module
from rein_cli.errors import ReinError
from rein_cli.fetch import Limits, fetch, staged
from rein_cli.zoo.release_files import staging_file
from rein_cli.zoo.releases import RELEASES

from .fake_hub import FakeHub
from .fake_releases import (
    DINOV2_S,
    OTHER,
    PATHS,
    TINY,
    child_env,
    release_file,
    release_state,
    saved,
    timm_weights,
    tiny_releases,
)
from .fake_server import FakeServer
from .helpers import VIT, rein

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
QUICK = Limits(connect=2, read=1, min_rate=1000)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with FakeServer() as server:
        yield server


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def last_line(capsys) -> str:
    """The last line the command line wrote to stderr (its error line)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- the downloader


def test_a_second_download_into_the_same_staging_file_is_refused_while_the_first_holds_it(server, tmp_path):
    url = server.add("/a.bin", DATA)
    part = tmp_path / "staging" / "a.bin.incomplete"
    with staged(url, part, progress=False, limits=QUICK) as first:
        with pytest.raises(ReinError) as refused, staged(url, part, progress=False, limits=QUICK):
            pass
        assert str(refused.value) == (
            f"another download of {url} is running (it holds the lock of {part}); wait for it to end, then run the "
            "same command again"
        )
        assert first.path.read_bytes() == DATA  # the second one touched nothing
        fetch_module.place(first.path, tmp_path / "a.bin")
    with staged(url, part, progress=False, limits=QUICK) as again:  # the holder is done: the remedy works
        assert again.sha256 == SHA and again.size == len(DATA)
        again.path.unlink()
    assert files(tmp_path) == ["a.bin"]


def test_a_server_that_accepts_and_never_answers_fails_within_the_read_timeout(server, tmp_path):
    url = server.add("/a.bin", DATA, delay=60)
    start = time.monotonic()
    with pytest.raises(ReinError, match=rf"cannot download {re.escape(url)} \(no answer within 1 s\); check the"):
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    assert time.monotonic() - start < 5 and files(tmp_path) == []


def test_headers_trickled_forever_are_cut_at_the_read_timeout(server, tmp_path):
    url = server.add("/a.bin", DATA, trickle_head=0.2)  # each byte well within the timeout, the answer never whole
    start = time.monotonic()
    with pytest.raises(ReinError, match=r"\(no answer within 1 s\); check the connection, then rerun to resume"):
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    assert time.monotonic() - start < 5 and files(tmp_path) == []


def test_a_body_trickled_forever_is_stopped_by_the_minimum_rate_and_resumed(server, tmp_path):
    url = server.add("/a.bin", DATA, trickle=0.05)
    start = time.monotonic()
    with pytest.raises(ReinError) as slow:
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    assert time.monotonic() - start < 6
    assert re.fullmatch(
        rf"the download of {re.escape(url)} is too slow: \d+ B in the last [12] s, under the minimum of 1\.0 kB/s "
        r"\(\$REIN_MIN_RATE\); its partial file is kept: check the connection, then rerun to resume",
        str(slow.value),
    )
    [part] = (tmp_path / ".staging").iterdir()
    have = part.stat().st_size
    assert 0 < have < 100 and part.read_bytes() == DATA[:have]
    server.set("/a.bin", trickle=0.0)
    assert fetch(url, tmp_path / "a.bin", sha256=SHA, progress=False, limits=QUICK).sha256 == SHA
    assert server.requests[-1].range == f"bytes={have}-"


def test_a_connection_not_made_in_time_says_so(server, tmp_path, monkeypatch):
    import http.client

    def hanging(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(http.client.socket, "create_connection", hanging)
    url = server.add("/a.bin", DATA)
    with pytest.raises(ReinError, match=r"\(no connection within 2 s\); check the connection, then rerun"):
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)


def test_the_limits_come_from_environment_variables(monkeypatch):
    assert Limits.from_env() == Limits(connect=10, read=15, min_rate=1000)
    monkeypatch.setenv("REIN_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("REIN_READ_TIMEOUT", "2")
    monkeypatch.setenv("REIN_MIN_RATE", "0")  # no minimum
    assert Limits.from_env() == Limits(connect=0.5, read=2, min_rate=0)
    for variable, value, unit in [
        ("REIN_READ_TIMEOUT", "soon", "seconds, more than 0"),
        ("REIN_CONNECT_TIMEOUT", "0", "seconds, more than 0"),
        ("REIN_MIN_RATE", "-1", "bytes per second, 0 for no minimum"),
    ]:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ReinError, match=rf"^{variable}='{value}' is not a number of {unit}; set it to one"):
            Limits.from_env()
        monkeypatch.delenv(variable)


def test_a_content_length_longer_than_the_file_is_resumed_to_the_real_end(server, tmp_path):
    url = server.add("/a.bin", DATA, headers={"Content-Length": str(len(DATA) + 5000)})
    with pytest.raises(ReinError, match=r"stopped after 300\.0 kB of 305\.0 kB \(the connection was closed\); rerun"):
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    got = fetch(url, tmp_path / "a.bin", sha256=SHA, progress=False, limits=QUICK)  # 416: nothing after the end
    assert got.sha256 == SHA and server.requests[-1].range == f"bytes={len(DATA)}-"


def test_a_content_range_that_starts_elsewhere_removes_the_partial_file(server, tmp_path):
    url = server.add("/a.bin", DATA, cut_after=1000)
    with pytest.raises(ReinError, match="rerun to resume"):
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    server.set("/a.bin", cut_after=None, headers={"Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"})
    with pytest.raises(ReinError) as elsewhere:
        fetch(url, tmp_path / "a.bin", progress=False, limits=QUICK)
    assert str(elsewhere.value) == f"{url} answered from byte 0, not 1000; the partial file was removed, rerun"
    assert files(tmp_path) == []
    server.set("/a.bin", headers={})
    assert fetch(url, tmp_path / "a.bin", sha256=SHA, progress=False, limits=QUICK).sha256 == SHA


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """The file server speaking HTTPS with a certificate for 127.0.0.1 that the client trusts (``SSL_CERT_FILE``)."""
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1"]
    make += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(make, check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeServer() as server:
        server._httpd.socket = context.wrap_socket(server._httpd.socket, server_side=True)
        yield server, server.url.replace("http://", "https://")


def test_the_waits_are_bounded_over_https_too(tls_server, tmp_path):
    server, base = tls_server
    server.add("/a.bin", DATA)
    assert fetch(base + "/a.bin", tmp_path / "a.bin", sha256=SHA, progress=False, limits=QUICK).sha256 == SHA
    server.add("/slow.bin", DATA, trickle_head=0.2)
    start = time.monotonic()
    with pytest.raises(ReinError, match=r"slow.bin \(no answer within 1 s\); check the connection"):
        fetch(base + "/slow.bin", tmp_path / "slow.bin", progress=False, limits=QUICK)
    server.add("/silent.bin", DATA, delay=60)
    with pytest.raises(ReinError, match=r"silent.bin \(no answer within 1 s\); check the connection"):
        fetch(base + "/silent.bin", tmp_path / "silent.bin", progress=False, limits=QUICK)
    assert time.monotonic() - start < 8 and files(tmp_path) == ["a.bin", "cert.pem", "key.pem"]


FETCH_IN_A_PROCESS = """
import resource, sys
from rein_cli.errors import ReinError
from rein_cli.fetch import fetch
if sys.argv[1] != "unlimited":
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
try:
    print(fetch(sys.argv[2], sys.argv[3], sha256=sys.argv[4], progress=False).sha256)
except ReinError as err:
    sys.exit(str(err))
"""


def fetch_in_a_process(limit: str, url: str, target: Path) -> subprocess.CompletedProcess:
    """`fetch` in a process of its own under a file-size limit (``ulimit -f``) of ``limit`` bytes."""
    command = [sys.executable, "-c", FETCH_IN_A_PROCESS, limit, url, str(target), SHA]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_the_file_size_limit_is_named_and_a_rerun_with_it_raised_resumes(server, tmp_path):
    url = server.add("/a.bin", DATA, no_length=True)  # the size is not known before the limit is hit
    target = tmp_path / "a.bin"
    limited = fetch_in_a_process("100000", url, target)
    part = tmp_path / ".staging" / "a.bin.incomplete"
    assert limited.returncode == 1 and limited.stderr.strip() == (
        "the file-size limit is reached while downloading a.bin: the limit is 100000 bytes (`ulimit -f` says 97) and "
        f"{part} is 100000 bytes of an unknown size; raise it (`ulimit -f unlimited`), then run the same command "
        "again to resume"
    )
    assert part.read_bytes() == DATA[:100_000]
    raised = fetch_in_a_process("unlimited", url, target)
    assert raised.returncode == 0 and raised.stdout.strip() == SHA, raised.stderr
    assert server.requests[-1].range == "bytes=100000-" and target.read_bytes() == DATA


def test_a_file_over_the_file_size_limit_is_refused_before_any_byte_is_written(server, tmp_path):
    url = server.add("/a.bin", DATA)
    limited = fetch_in_a_process("100000", url, tmp_path / "a.bin")
    assert limited.returncode == 1 and limited.stderr.strip() == (
        "the file-size limit is reached while downloading a.bin: the limit is 100000 bytes (`ulimit -f` says 97) and "
        "the file is 300000 bytes (300.0 kB); raise it (`ulimit -f unlimited`), then run the same command again to "
        "resume"
    )
    assert files(tmp_path) == []
    assert fetch_in_a_process("unlimited", url, tmp_path / "a.bin").returncode == 0


# ----------------------------------------------------------------------------- release files


@pytest.fixture(scope="module")
def states():
    """The tiny release's state dict, and a second one (another training of it)."""
    return release_state(seed=1, scale=0.3), release_state(seed=2, scale=0.5)


@pytest.fixture(scope="module")
def good(states):
    return release_file(states[0])


@pytest.fixture
def world(tmp_path, monkeypatch, good):
    """A Hub with the tiny DINOv2-S weights and a release mirror with the two tiny releases (same file name), an empty
    Hub cache and $REIN_HOME, the Hub online."""
    with FakeHub() as hub:
        hub.add_file(DINOV2_S, "model.safetensors", timm_weights("vit_small_patch14_dinov2", **VIT), "1" * 40)
        for path in PATHS.values():
            hub.add("/releases/" + path, good)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("REIN_RELEASES_URL", hub.url + "/releases")
        monkeypatch.setenv("REIN_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        for name, release in tiny_releases().items():
            monkeypatch.setitem(RELEASES, name, release)
        yield hub, tmp_path / "home" / "zoo"


def records(zoo: Path) -> dict:
    path = zoo / "hashes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def release_url(hub, name: str = TINY) -> str:
    return f"{hub.url}/releases/{PATHS[name]}"


def serve(hub, data: bytes, name: str = TINY, **faults) -> None:
    hub.add("/releases/" + PATHS[name], data, **faults)


def assert_nothing_kept(zoo: Path, name: str = TINY) -> None:
    """Nothing about ``name`` recorded, kept, staged or converted."""
    assert name not in records(zoo)
    assert not (zoo / "releases" / name).exists() and not (zoo / "models" / name).exists()
    assert not list(zoo.rglob("*.incomplete"))


def invalid_line(url: str, what: str, size: str, kind: str, mirror: str) -> str:
    return (
        f"error: {url} sent {what} ({size}{kind}), not the release file of {TINY}: it was deleted and nothing was "
        f"recorded; check the mirror (REIN_RELEASES_URL={mirror}), then run the same command again"
    )


HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n" * 10


@pytest.mark.parametrize(
    ("body", "content_type", "what", "size"),
    [
        (HTML, "text/html; charset=utf-8", "an HTML page", "920 B"),
        (os.urandom(5000), "application/octet-stream", "a file that is not a PyTorch file", "5.0 kB"),
        (
            b'{"error": "rate limited"}',
            None,
            'text that is not a PyTorch file (it begins \'{"error": "rate limited"}\')',
            "25 B",
        ),
        (b"", None, "an empty file", "0 B"),
    ],
    ids=["html", "random-bytes", "json", "empty"],
)
def test_what_is_not_a_release_is_deleted_and_never_recorded(world, capsys, body, content_type, what, size):
    hub, zoo = world
    serve(hub, body, headers={"Content-Type": content_type} if content_type else {})
    assert rein("pull", TINY, "--no-progress") == 1
    line = last_line(capsys)
    kind = f", {content_type}" if content_type else ""
    assert line == invalid_line(release_url(hub), what, size, kind, f"{hub.url}/releases")
    assert "weights_only" not in line and "unpickl" not in line
    assert_nothing_kept(zoo)
    assert rein("models") == 0 and re.search(rf"{TINY} +dinov2-s +no +\? +unverified", capsys.readouterr().out)


def test_a_pytorch_file_without_the_keys_of_a_rein_checkpoint(world, capsys, states):
    hub, zoo = world
    backbone_only = {k: v for k, v in states[0].items() if not k.startswith(("decode_head.", "backbone.reins."))}
    backbone_only["backbone.pos_embed"] = states[0]["backbone.reins.scale"]  # keys of a backbone file
    serve(hub, saved(backbone_only))
    assert rein("pull", TINY, "--no-progress") == 1
    what = (
        "a PyTorch file without the keys of a Rein checkpoint (not an official Rein checkpoint: no "
        "decode_head.cls_embed.weight (is it a backbone file?))"
    )
    size = fetch_module.amount(len(saved(backbone_only)))
    assert last_line(capsys) == invalid_line(release_url(hub), what, size, "", f"{hub.url}/releases")
    assert_nothing_kept(zoo)


def test_a_rein_checkpoint_of_another_model_does_not_fit(world, capsys, states):
    hub, zoo = world
    other = {k: v for k, v in states[0].items() if not k.startswith("decode_head.transformer_decoder.layers.8.")}
    serve(hub, release_file(other))
    assert rein("pull", TINY, "--no-progress") == 1
    line = last_line(capsys)
    assert line.startswith(
        f"error: {release_url(hub)} sent a Rein checkpoint that does not fit dinov2-s (the checkpoint does not match "
        "the named backbone: 18 parameters are not in the file: decode_head.transformer_decoder.layers.8."
    )
    assert line.endswith(
        f"ffn.layers.0.0.weight) (72.9 MB), not the release file of {TINY}: it was deleted and nothing was recorded; "
        f"check the mirror (REIN_RELEASES_URL={hub.url}/releases), then run the same command again"
    )
    assert_nothing_kept(zoo)


def test_pickled_objects_are_refused_without_advice_to_unpickle(world, capsys, states):
    hub, zoo = world
    serve(hub, saved({"state_dict": states[0], "hook": Path("x")}))  # a class only full unpickling makes
    assert rein("pull", TINY, "--no-progress") == 1
    line = last_line(capsys)
    assert "sent a PyTorch file holding objects other than tensors, which rein does not load (" in line
    assert "weights_only" not in line and "unpickl" not in line and "if you trust" not in line
    assert "it was deleted and nothing was recorded" in line
    assert_nothing_kept(zoo)


def test_a_truncated_release_is_deleted(world, capsys, good):
    hub, zoo = world
    serve(hub, good, headers={"Content-Length": str(len(good) // 2)})  # the server says the file ends halfway
    assert rein("pull", TINY, "--no-progress") == 1
    line = last_line(capsys)
    assert line.startswith(
        f"error: {release_url(hub)} sent a truncated or damaged PyTorch file (PytorchStreamReader failed reading zip "
        f"archive: failed finding central directory) ({fetch_module.amount(len(good) // 2)}), not the release file"
    )
    assert_nothing_kept(zoo)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "not found: {url} (HTTP 404); check the file name, and the server or mirror address"),
        (403, "access denied to {url} (HTTP 403): the file may be private or need a login; check the address and "),
        (500, "downloading {url} failed: HTTP 500 Internal Server Error; the server may be busy, rerun later to"),
    ],
)
def test_http_errors_record_and_stage_nothing(world, capsys, status, message):
    hub, zoo = world
    hub.set("/releases/" + PATHS[TINY], status=status)
    assert rein("pull", TINY, "--no-progress") == 1
    assert last_line(capsys).startswith("error: " + message.format(url=release_url(hub)))
    assert_nothing_kept(zoo)
    assert not (zoo / "staging").exists() or not list((zoo / "staging").iterdir())


def test_a_cut_off_download_resumes_and_records_the_whole_file(world, capsys, good):
    hub, zoo = world
    serve(hub, good, cut_after=100_000)
    assert rein("pull", TINY, "--no-progress") == 1
    assert "rerun to resume" in last_line(capsys)
    part = staging_file(zoo, RELEASES[TINY], release_url(hub))
    assert part.stat().st_size == 100_000 and TINY not in records(zoo)  # nothing recorded of a partial file
    hub.set("/releases/" + PATHS[TINY], cut_after=None)
    assert rein("pull", TINY, "--no-progress") == 0
    assert [r.range for r in hub.requests if r.method == "GET" and r.path.endswith(".pth")] == [None, "bytes=100000-"]
    assert records(zoo)[TINY] == {
        "sha256": hashlib.sha256(good).hexdigest(),
        "size": len(good),
        "url": release_url(hub),
    }
    assert not part.exists() and (zoo / "releases" / TINY / "iter_40000_published.pth").read_bytes() == good


def test_releases_that_share_a_file_name_never_share_partial_data(world, capsys, good, states):
    hub, zoo = world
    other = release_file(states[1])
    serve(hub, good, cut_after=100_000)
    serve(hub, other, OTHER)
    assert rein("pull", TINY, "--no-progress") == 1  # cut off: a partial of TINY stays in staging
    assert rein("pull", OTHER, "--no-progress") == 0  # same file name, another release: from its first byte
    ranges = [r.range for r in hub.requests if r.method == "GET" and PATHS[OTHER] in r.path]
    assert ranges == [None]
    assert records(zoo)[OTHER]["sha256"] == hashlib.sha256(other).hexdigest()
    part = staging_file(zoo, RELEASES[TINY], release_url(hub))
    assert part.read_bytes() == good[:100_000]  # untouched by the other pull
    hub.set("/releases/" + PATHS[TINY], cut_after=None)
    assert rein("pull", TINY, "--no-progress") == 0
    assert records(zoo)[TINY]["sha256"] == hashlib.sha256(good).hexdigest()
    capsys.readouterr()


def test_staging_names_are_unique_per_release_file_and_source(tmp_path):
    names = {}
    for release in RELEASES.values():
        if release.path:
            name = staging_file(tmp_path, release, f"https://github.com/releases/{release.path}").name
            names.setdefault(name, release.name)
    assert len(names) == len([r for r in RELEASES.values() if r.path])  # nine share iter_40000_published.pth
    small = RELEASES["rein-dinov2-s-gta"]
    first = staging_file(tmp_path, small, "https://github.com/w1oves/Rein/releases/download/" + small.path)
    mirror = staging_file(tmp_path, small, "http://mirror.local/" + small.path)
    assert first.name.startswith("GTAV+ViT-Small--iter_40000_published.pth--") and first.name.endswith(".incomplete")
    assert mirror != first and mirror.parent == tmp_path / "staging"
    semi = RELEASES["rein-dinov2-l-semi"]
    assert "/" not in staging_file(tmp_path, semi, semi.path).name.removeprefix("Semi")  # 1%2F16 is no folder


def test_a_partial_of_an_older_rein_under_the_shared_name_is_removed(world, capsys):
    hub, zoo = world
    shared = zoo / "staging" / "iter_40000_published.pth.incomplete"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"a mixture of two releases")
    assert rein("pull", TINY, "--no-progress") == 0
    assert f"removed {shared}: a partial download of an older rein" in capsys.readouterr().err
    assert not shared.exists() and [r.range for r in hub.requests if r.path.endswith(".pth")][-1] is None


def test_a_mirror_with_a_trailing_slash_is_recorded_as_the_source(world, monkeypatch, good):
    hub, zoo = world
    monkeypatch.setenv("REIN_RELEASES_URL", hub.url + "/releases/")
    assert rein("pull", TINY, "--no-progress") == 0
    assert records(zoo)[TINY]["url"] == release_url(hub)
    config = json.loads((zoo / "models" / TINY / "config.json").read_text())
    assert config["provenance"]["source"] == release_url(hub)


def test_a_server_that_ignores_ranges_gives_the_whole_file_again(world, capsys, good):
    hub, zoo = world
    serve(hub, good, cut_after=300_000)
    assert rein("pull", TINY, "--no-progress") == 1
    hub.set("/releases/" + PATHS[TINY], cut_after=None, ignore_range=True)
    assert rein("pull", TINY, "--no-progress") == 0
    assert "the server ignored the range request" in capsys.readouterr().err
    assert records(zoo)[TINY]["sha256"] == hashlib.sha256(good).hexdigest()


def test_two_pulls_at_once_in_two_processes(world, tmp_path, good):
    hub, zoo = world
    serve(hub, good, pause_after=1_000_000, pause=10)  # the first pull holds its staging file for a while
    env = child_env(hub.url, tmp_path / "home", tmp_path / "hub", REIN_READ_TIMEOUT="60")
    command = [sys.executable, "-m", "tests.fake_releases", "pull", TINY, "--no-progress"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = staging_file(zoo, RELEASES[TINY], release_url(hub))
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 1_000_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and second.stderr.strip().splitlines()[-1] == (
        f"error: another download of {release_url(hub)} is running (it holds the lock of {part}); wait for it to "
        "end, then run the same command again"
    )
    assert part.stat().st_size >= 1_000_000  # the second pull did not touch the first one's data
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert records(zoo)[TINY]["sha256"] == hashlib.sha256(good).hexdigest()
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # the remedy
    assert again.returncode == 0 and f"adapter {TINY} ready" in again.stdout, again.stderr
    assert len([r for r in hub.requests if r.path.endswith(".pth") and r.method == "GET"]) == 1


def test_a_release_server_that_never_answers_fails_within_60_s_with_the_default_limits(world, capsys):
    hub, zoo = world
    hub.set("/releases/" + PATHS[TINY], delay=600)
    start = time.monotonic()
    assert rein("pull", TINY, "--no-progress") == 1
    took = time.monotonic() - start
    assert took < 60, took
    assert last_line(capsys) == (
        f"error: cannot download {release_url(hub)} (no answer within 15 s); check the connection, then rerun to resume"
    )
    assert_nothing_kept(zoo)


def test_a_trickling_release_server_fails_at_the_limits_from_the_environment(world, capsys, monkeypatch, good):
    hub, zoo = world
    monkeypatch.setenv("REIN_READ_TIMEOUT", "1")
    serve(hub, good, trickle_head=0.3)
    start = time.monotonic()
    assert rein("pull", TINY, "--no-progress") == 1
    assert time.monotonic() - start < 10
    assert last_line(capsys) == (
        f"error: cannot download {release_url(hub)} (no answer within 1 s); check the connection, then rerun to resume"
    )
    serve(hub, good, trickle=0.05)
    start = time.monotonic()
    assert rein("pull", TINY, "--no-progress") == 1
    assert time.monotonic() - start < 10
    assert "is too slow: " in last_line(capsys) and TINY not in records(zoo)
    monkeypatch.setenv("REIN_READ_TIMEOUT", "a while")
    assert rein("pull", TINY, "--no-progress") == 1
    assert last_line(capsys) == (
        "error: REIN_READ_TIMEOUT='a while' is not a number of seconds, more than 0; set it to one, or unset it"
    )


# ----------------------------------------------------------------------------- the record, and --refresh


def pulled_state(zoo: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(zoo / "models" / TINY / "model.safetensors"))


def test_a_changed_release_names_refresh_and_following_it_works(world, capsys, good, states):
    hub, zoo = world
    assert rein("pull", TINY, "--no-progress") == 0
    old = records(zoo)[TINY]
    for folder in ("models", "releases"):  # as on another machine sharing the record, or after a cleanup
        shutil.rmtree(zoo / folder)
    new = release_file(states[1])
    new_sha = hashlib.sha256(new).hexdigest()
    serve(hub, new)
    capsys.readouterr()
    assert rein("pull", TINY, "--no-progress") == 1
    part = staging_file(zoo, RELEASES[TINY], release_url(hub))
    assert last_line(capsys) == (
        f"error: {release_url(hub)} sent a Rein release file that differs from the one recorded for {TINY}: SHA-256 "
        f"{new_sha[:16]}... ({len(new)} bytes) where {zoo / 'hashes.json'} has SHA-256 {old['sha256'][:16]}..., "
        f"{old['size']} bytes, from {old['url']}; it is kept in staging: to check it and take it as the release, run "
        f"`rein pull {TINY} --refresh`"
    )
    assert records(zoo)[TINY] == old and part.read_bytes() == new and not (zoo / "models" / TINY).exists()
    assert rein("pull", TINY, "--refresh", "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"{TINY}: recorded SHA-256 {old['sha256']}, {old['size']} bytes, from {old['url']}; downloading" in err
    assert f"{TINY}: this download differs from the recorded one; the record is replaced with it:" in err
    assert f"  SHA-256  {old['sha256']} -> {new_sha}" in err
    assert f"  from     {old['url']} (unchanged)" in err
    assert records(zoo)[TINY] == {"sha256": new_sha, "size": len(new), "url": release_url(hub)}
    gets = [r.range for r in hub.requests if r.method == "GET" and r.path.endswith(".pth")]
    assert gets[-2:] == [None, f"bytes={len(new)}-"]  # the file kept in staging was only asked for what follows it
    assert not part.exists()  # what was kept in staging was used, not downloaded again
    import torch

    torch.testing.assert_close(pulled_state(zoo)["backbone.reins.scale"], torch.tensor(0.5))


def test_refresh_replaces_the_record_only_after_the_new_file_passes_the_checks(world, capsys, good, states):
    hub, zoo = world
    assert rein("pull", TINY, "--no-progress") == 0
    old, before = records(zoo)[TINY], pulled_state(zoo)
    serve(hub, HTML, headers={"Content-Type": "text/html"})
    assert rein("pull", TINY, "--refresh", "--no-progress") == 1
    assert last_line(capsys) == invalid_line(
        release_url(hub), "an HTML page", "920 B", ", text/html", f"{hub.url}/releases"
    )
    assert records(zoo)[TINY] == old and pulled_state(zoo).keys() == before.keys()
    assert (zoo / "releases" / TINY / "iter_40000_published.pth").read_bytes() == good  # the kept file stays too
    serve(hub, good)
    assert rein("pull", TINY, "--refresh", "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"{TINY}: this download is the recorded one (SHA-256 {old['sha256']}" in err
    assert records(zoo)[TINY] == old and "recorded SHA-256" not in err.split("the record is unchanged")[1]


def test_refresh_is_for_released_adapters_and_needs_a_connection(world, capsys, monkeypatch):
    hub, _ = world
    assert rein("pull", "dinov2-s", "--refresh") == 1
    assert last_line(capsys) == (
        "error: --refresh is for released adapters (rein-...), whose first download's SHA-256 rein records; dinov2-s "
        "comes from the Hugging Face Hub, which checks its files itself: run `rein pull dinov2-s`"
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert rein("pull", TINY, "--refresh") == 1
    assert (
        last_line(capsys) == f"error: --refresh needs a connection; run `rein pull {TINY} --refresh` with a connection"
    )
    assert not hub.requests


def test_recorded_garbage_of_an_older_rein_is_recovered_with_refresh(world, capsys, good):
    """An older rein kept and recorded an HTML page as the release; it must not be taken, and --refresh recovers."""
    hub, zoo = world
    kept = zoo / "releases" / TINY / "iter_40000_published.pth"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(HTML)
    garbage = {"sha256": hashlib.sha256(HTML).hexdigest(), "size": len(HTML), "url": "http://bad.mirror/x.pth"}
    (zoo / "hashes.json").write_text(json.dumps({TINY: garbage}))
    assert rein("pull", TINY, "--no-progress") == 1
    assert last_line(capsys) == (
        f"error: the kept release file {kept} is an HTML page (920 B), not the release file of {TINY}: it was deleted, "
        f"and its recorded SHA-256 came from it; run `rein pull {TINY} --refresh` to download it again and record the "
        "new file once it passes the checks"
    )
    assert not kept.exists() and not hub.requests
    assert rein("pull", TINY, "--refresh", "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"  SHA-256  {garbage['sha256']} -> {hashlib.sha256(good).hexdigest()}" in err
    assert f"  size     {len(HTML)} -> {len(good)}" in err and "  from     http://bad.mirror/x.pth -> " in err
    assert records(zoo)[TINY] == {
        "sha256": hashlib.sha256(good).hexdigest(),
        "size": len(good),
        "url": release_url(hub),
    }
    assert kept.read_bytes() == good and (zoo / "models" / TINY / "config.json").is_file()


def test_a_garbage_record_without_its_file_is_recovered_with_refresh(world, capsys, good):
    hub, zoo = world
    garbage = {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1, "url": release_url(hub)}
    (zoo).mkdir(parents=True)
    (zoo / "hashes.json").write_text(json.dumps({TINY: garbage}))
    assert rein("pull", TINY, "--no-progress") == 1
    assert f"run `rein pull {TINY} --refresh`" in last_line(capsys)
    assert rein("pull", TINY, "--refresh", "--no-progress") == 0
    assert records(zoo)[TINY]["sha256"] == hashlib.sha256(good).hexdigest()
    gets = [r.range for r in hub.requests if r.method == "GET" and r.path.endswith(".pth")]
    assert gets == [None, f"bytes={len(good)}-"]  # downloaded once


def test_a_kept_file_that_differs_from_its_record_names_refresh(world, capsys, good, states):
    hub, zoo = world
    assert rein("pull", TINY, "--no-progress") == 0
    record = records(zoo)[TINY]
    shutil.rmtree(zoo / "models")
    kept = zoo / "releases" / TINY / "iter_40000_published.pth"
    other = release_file(states[1])
    kept.write_bytes(other)  # a valid release file, but not the recorded one
    count = len(hub.requests)
    assert rein("pull", TINY, "--no-progress") == 1
    assert last_line(capsys) == (
        f"error: the kept release file {kept} (SHA-256 {hashlib.sha256(other).hexdigest()[:16]}..., {len(other)} "
        f"bytes) differs from the one recorded for {TINY} (SHA-256 {record['sha256'][:16]}..., {record['size']} "
        f"bytes, from {record['url']}); run `rein pull {TINY} --refresh` to download it again and record the new "
        "file once it passes the checks"
    )
    assert len(hub.requests) == count
    assert rein("pull", TINY, "--refresh", "--no-progress") == 0
    assert "this download is the recorded one" in capsys.readouterr().err and kept.read_bytes() == good


def test_a_kept_file_without_a_record_is_checked_then_recorded(world, capsys, good):
    hub, zoo = world
    assert rein("pull", TINY, "--no-progress") == 0
    (zoo / "hashes.json").unlink()
    shutil.rmtree(zoo / "models")
    count = len(hub.requests)
    assert rein("pull", TINY, "--no-progress") == 0
    assert records(zoo)[TINY]["sha256"] == hashlib.sha256(good).hexdigest()
    assert not [r for r in hub.requests[count:] if r.path.endswith(".pth")]


def test_a_published_checksum_is_checked_and_not_refreshed(world, capsys, monkeypatch, good):
    import dataclasses

    hub, zoo = world
    published = dataclasses.replace(RELEASES[TINY], sha256="0" * 64)
    monkeypatch.setitem(RELEASES, TINY, published)
    assert rein("pull", TINY, "--no-progress") == 1
    assert last_line(capsys) == (
        f"error: {release_url(hub)} sent a file with SHA-256 {hashlib.sha256(good).hexdigest()}, not the published "
        f"{'0' * 64} of {TINY}: it was deleted; check the mirror (REIN_RELEASES_URL={hub.url}/releases), then run "
        "the same command again"
    )
    assert_nothing_kept(zoo)
    assert rein("pull", TINY, "--refresh") == 1
    assert "has a published SHA-256; --refresh replaces only hashes recorded" in last_line(capsys)
