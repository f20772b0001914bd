"""`rein push` against a Hugging Face Hub on 127.0.0.1: each failure (401, 403, 404, 500, no connection) says
its own next step, and following it makes the same push work."""

import huggingface_hub.constants
import pytest

from .fake_hub import FakeHub
from .fake_server import unused_port
from .helpers import errors, rein


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The Hub online at a fake endpoint, no login of the user's own (no token file, no $HF_TOKEN)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def pushed(hub, repo: str, checkpoint) -> bool:
    """The repo's newest commit holds the checkpoint's weights and a model card."""
    files = hub.repos.get(repo, {}).get(hub.main.get(repo), {})
    weights = (checkpoint / "model.safetensors").read_bytes()
    return files.get("model.safetensors") == weights and b"rein" in files.get("README.md", b"")


def test_without_credentials_push_says_log_in_and_a_login_works(hub, trained, monkeypatch, capsys):
    checkpoint = trained / "checkpoints" / "last"
    hub.token = "hf_write"
    assert rein("push", checkpoint, "my-lab/rein-x") == 1
    message = errors(capsys)
    assert f"the Hugging Face Hub at {hub.url} did not accept the credentials for pushing to my-lab/rein-x" in message
    assert "(HTTP 401): log in with a token with write access (`hf auth login`, or $HF_TOKEN), then rerun" in message
    assert "hf download" not in message
    monkeypatch.setenv("HF_TOKEN", "hf_write")  # what `hf auth login` stores, as the environment gives it
    assert rein("push", checkpoint, "my-lab/rein-x") == 0
    assert pushed(hub, "my-lab/rein-x", checkpoint)


def test_no_write_access_names_the_organisation_and_pushing_under_ones_own_name_works(hub, trained, capsys):
    checkpoint = trained / "checkpoints" / "last"
    hub.push_status["their-lab"] = 403
    assert rein("push", checkpoint, "their-lab/rein-x") == 1
    message = errors(capsys)
    assert "no write access to their-lab/rein-x on the Hugging Face Hub" in message and "(HTTP 403)" in message
    assert "that may write to their-lab, or push to a repo under your own name" in message
    assert rein("push", checkpoint, "me/rein-x") == 0
    assert pushed(hub, "me/rein-x", checkpoint)


def test_an_unknown_organisation_says_check_the_name_and_the_right_name_works(hub, trained, capsys):
    checkpoint = trained / "checkpoints" / "last"
    hub.push_status["my-lba"] = 404
    assert rein("push", checkpoint, "my-lba/rein-x") == 1
    message = errors(capsys)
    assert "my-lba/rein-x was not found on the Hugging Face Hub" in message and "(HTTP 404)" in message
    assert "check the repo name and that the organisation my-lba exists and you belong to it" in message
    assert rein("push", checkpoint, "my-lab/rein-x") == 0
    assert pushed(hub, "my-lab/rein-x", checkpoint)


def test_a_hub_failure_says_retry_later_and_a_retry_works(hub, trained, capsys):
    checkpoint = trained / "checkpoints" / "last"
    hub.push_status["my-lab"] = 500
    assert rein("push", checkpoint, "my-lab/rein-x") == 1
    message = errors(capsys)
    assert f"the Hugging Face Hub at {hub.url} failed while pushing to my-lab/rein-x (HTTP 500, its side)" in message
    assert "retry later with the same command" in message
    del hub.push_status["my-lab"]  # later
    assert rein("push", checkpoint, "my-lab/rein-x") == 0
    assert pushed(hub, "my-lab/rein-x", checkpoint)


def test_no_connection_says_check_it_and_with_one_the_push_works(hub, trained, monkeypatch, capsys):
    checkpoint = trained / "checkpoints" / "last"
    port = unused_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert rein("push", checkpoint, "my-lab/rein-x") == 1
    message = errors(capsys)
    assert f"could not reach the Hugging Face Hub at http://127.0.0.1:{port} to push to my-lab/rein-x" in message
    assert "the connection was refused; check the connection (and HF_ENDPOINT), then rerun the same command" in message
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert rein("push", checkpoint, "my-lab/rein-x") == 0
    assert pushed(hub, "my-lab/rein-x", checkpoint)


def test_offline_push_says_how_to_go_online(hub, trained, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert rein("push", trained / "checkpoints" / "last", "my-lab/rein-x") == 1
    assert "rerun without --offline and with HF_HUB_OFFLINE unset" in errors(capsys)
    assert not [r for r in hub.requests if r.method == "POST"]


def test_a_hub_that_never_answers_a_push_is_an_error_after_the_read_timeout(hub, trained, monkeypatch, capsys):
    """huggingface_hub sends repo creation and uploads without a timeout: a silent Hub kept `rein push` waiting
    forever. Now each answer is waited for `UNTIMED_READ_TIMEOUT` (30 s; 1 s here)."""
    import socket
    import time

    import rein_cli.hub

    monkeypatch.setattr(rein_cli.hub, "UNTIMED_READ_TIMEOUT", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepted by the system, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        start = time.monotonic()
        assert rein("push", trained / "checkpoints" / "last", "my-lab/rein-x") == 1
        assert time.monotonic() - start < 15
    message = errors(capsys)
    assert f"could not reach the Hugging Face Hub at {url} to push to my-lab/rein-x: no answer within 1 s" in message
    from huggingface_hub.utils import _http

    assert _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory  # huggingface_hub's own, restored
