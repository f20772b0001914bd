"""The Hugging Face Hub, low level: files in the local cache, downloads with one clear error each, repo snapshots,
uploads. Every request has connect and read timeouts, and huggingface_hub's retry warnings stay off the terminal:
the one `ReinError` says what failed and what to do."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rein_cli.errors import ReinError

WEIGHTS_FILE = "model.safetensors"
PICKLE_WEIGHTS_FILE = "pytorch_model.bin"  # what older timm repos hold instead; loaded with weights_only=True
TIMM_WEIGHTS_FILES = (WEIGHTS_FILE, PICKLE_WEIGHTS_FILE)  # timm's order: the safetensors file when the repo has one
CHECKPOINT_FILES = ("config.json", "model.safetensors")  # what rebuilding a rein checkpoint from the Hub needs
HF_URI = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
UNTIMED_READ_TIMEOUT = 30.0  # s: the wait for an answer where huggingface_hub sets none (repo creation, uploads)
QUIET_LOGGERS = ("huggingface_hub", "httpx2", "httpx")  # its retry warnings (each twice); a line per request


def offline() -> bool:
    """True when the Hub must not be contacted: ``HF_HUB_OFFLINE=1`` (``--offline`` sets it for the command)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` (a Hub mirror), read now; None for the default huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or None


def endpoint_url(endpoint: str | None = None) -> str:
    """The Hub's base URL requests go to: ``endpoint``, else $HF_ENDPOINT, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (endpoint or hub_endpoint() or constants.ENDPOINT).rstrip("/")


def timeouts() -> tuple[float, float]:
    """(answer, block) in seconds: how long a Hub request waits to connect and for the answer to a file's metadata
    request, and for each block of a download. huggingface_hub's ``$HF_HUB_ETAG_TIMEOUT`` and
    ``$HF_HUB_DOWNLOAD_TIMEOUT`` (10 s each by default), read when huggingface_hub is imported."""
    from huggingface_hub import constants

    return float(constants.HF_HUB_ETAG_TIMEOUT), float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


def parse_hf_uri(text: str) -> tuple[str, str | None] | None:
    """``hf://org/name[@revision]`` -> (repo id, revision); None for anything else."""
    match = HF_URI.match(str(text))
    return (match["repo"], match["revision"]) if match else None


def cached_file(
    repo_id: str, filename: str = WEIGHTS_FILE, cache_dir: Path | None = None, revision: str | None = None
) -> Path | None:
    """The file's path in the local Hub cache (at ``revision``, default the cached main), or None; no network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def cached_weights(repo_id: str, revision: str | None = None, cache_dir: Path | None = None) -> Path | None:
    """A timm repo's weights in the local Hub cache, as timm would load them (`TIMM_WEIGHTS_FILES` in order), or
    None; no network."""
    for name in TIMM_WEIGHTS_FILES:
        if (found := cached_file(repo_id, name, cache_dir, revision)) is not None:
            return found
    return None


def revision_of(path: Path) -> str | None:
    """The Hub commit a cached file belongs to (its ``snapshots/<commit>/`` folder), or None."""
    parent = Path(path).parent
    is_commit = parent.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parent.name)
    return parent.name if is_commit else None


@contextlib.contextmanager
def hub_requests() -> Iterator[None]:
    """Around every Hub call rein makes, for the command line and the library alike: huggingface_hub's warnings
    (one per retry, "Retrying in 1s", printed twice beside a root handler) and httpx's line per request are kept
    off the terminal, since the failure ends in one `ReinError`; and requests huggingface_hub sends without a
    timeout (repo creation, uploads) get connect and read timeouts. Both are restored afterwards."""
    import huggingface_hub

    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    factory = _timed_client_factory(huggingface_hub)
    try:
        yield
    finally:
        if factory is not None:
            huggingface_hub.set_client_factory(factory)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _timed_client_factory(huggingface_hub):
    """Install a client factory whose clients time out (`timeouts`, `UNTIMED_READ_TIMEOUT`) where huggingface_hub's
    default one waits forever; returns the factory to restore, or None when huggingface_hub has no such default
    (an older version, or a factory the user set)."""
    try:
        from huggingface_hub.utils import _http
    except ImportError:
        return None
    default = getattr(_http, "default_client_factory", None)
    if default is None or getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is not default:
        return None
    answer, _ = timeouts()

    def timed_client():
        client = default()
        client.timeout = (answer, UNTIMED_READ_TIMEOUT, UNTIMED_READ_TIMEOUT, answer)  # connect, read, write, pool
        return client

    huggingface_hub.set_client_factory(timed_client)
    return default


def file_metadata(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    endpoint: str | None = None,
    timeout: float | None = None,
):
    """The Hub's metadata of one file (size, commit): one HEAD request, answered within ``timeout`` s (default
    `timeouts`) or an exception (huggingface_hub's, unchanged: not found, no access, the network), never retried."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = endpoint or hub_endpoint()
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    with hub_requests():
        return get_hf_file_metadata(url, endpoint=endpoint, timeout=timeout or timeouts()[0])


def file_size(
    repo_id: str, filename: str = WEIGHTS_FILE, revision: str | None = None, timeout: float | None = None
) -> int | None:
    """The size in bytes the Hub reports for a file (within ``timeout`` s, default `timeouts`), or None when it
    cannot be asked."""
    if offline():
        return None
    try:
        return file_metadata(repo_id, filename, revision, timeout=timeout).size
    except Exception:  # the download that follows reports the failure properly
        return None


def download_file(
    repo_id: str,
    filename: str = WEIGHTS_FILE,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    *,
    fetch: str | None = None,
) -> Path:
    """Download (or reuse from the cache) one file of a Hub repo, with the Hub's progress bar; every failure is
    one `ReinError` that says what to do (``fetch``: the command that gets the file where there is a connection,
    default ``hf download``). ``endpoint``: a Hub mirror (default: $HF_ENDPOINT or huggingface.co).

    The file's metadata is asked for first, once and within `timeouts`: a Hub that cannot be reached is one
    error after at most that long (a cached copy is used instead when there is one), not huggingface_hub's
    minutes of retries."""
    if not offline():
        try:
            file_metadata(repo_id, filename, revision, endpoint)
        except Exception as err:
            cached = cached_file(repo_id, filename, cache_dir, revision)
            if cached is not None and _unreachable(err):
                return cached
            raise hub_error(err, repo_id, filename, revision, fetch=fetch, endpoint=endpoint) from err
    return _download(repo_id, filename, cache_dir, endpoint, revision, fetch)


def _download(
    repo_id: str, filename: str, cache_dir: Path | None, endpoint: str | None, revision: str | None, fetch: str | None
) -> Path:
    from huggingface_hub import hf_hub_download

    answer, _ = timeouts()
    try:
        with hub_requests():
            path = hf_hub_download(
                repo_id,
                filename,
                cache_dir=cache_dir,
                endpoint=endpoint or hub_endpoint(),
                revision=revision,
                local_files_only=offline(),
                etag_timeout=answer,
            )
        return Path(path)
    except Exception as err:
        raise hub_error(err, repo_id, filename, revision, fetch=fetch, endpoint=endpoint, downloading=True) from err


def weights_file(repo_id: str, revision: str | None = None, *, fetch: str | None = None) -> tuple[str, int | None]:
    """Which weights file a timm repo holds, as timm chooses it: ``model.safetensors``, else ``pytorch_model.bin``;
    and its size. Asks the Hub (`file_metadata`); the first failure other than "no such file" is the error."""
    from huggingface_hub import errors

    for name in TIMM_WEIGHTS_FILES:
        try:
            return name, file_metadata(repo_id, name, revision).size
        except errors.RemoteEntryNotFoundError as err:
            missing = err
        except Exception as err:
            raise hub_error(err, repo_id, name, revision, fetch=fetch) from err
    at = f"{repo_id}@{revision}" if revision else repo_id
    raise ReinError(
        f"{at} on the Hugging Face Hub holds neither {' nor '.join(TIMM_WEIGHTS_FILES)}; check the name and revision"
    ) from missing


def download_weights(
    repo_id: str, revision: str | None = None, *, filename: str | None = None, fetch: str | None = None
) -> Path:
    """A timm repo's weights from the cache (`cached_weights`), else downloaded: ``filename`` (from `weights_file`)
    or whichever of `TIMM_WEIGHTS_FILES` the repo holds."""
    cached = cached_weights(repo_id, revision)
    if cached is not None:
        return cached
    if offline():
        return _download(repo_id, WEIGHTS_FILE, None, None, revision, fetch)  # the offline error, with ``fetch``
    name = filename or weights_file(repo_id, revision, fetch=fetch)[0]
    return _download(repo_id, name, None, None, revision, fetch)


def snapshot(repo_id: str, revision: str | None = None, *, files: tuple[str, ...] = CHECKPOINT_FILES) -> Path:
    """The local folder holding ``files`` of a Hub repo at one commit (``revision``: a branch, tag or commit;
    default main); each is downloaded once, then read from the cache."""
    fetch = f"`hf download {repo_id} {' '.join(files)}" + (f" --revision {revision}`" if revision else "`")
    paths = [download_file(repo_id, files[0], revision=revision, fetch=fetch)]
    commit = revision_of(paths[0]) or revision  # the rest from the same commit, even if main moves meanwhile
    paths += [download_file(repo_id, name, revision=commit, fetch=fetch) for name in files[1:]]
    return paths[0].parent


def _unreachable(err: BaseException) -> bool:
    """The Hub could not be reached or did not answer in time (not an answer such as "not found")."""
    return _network_reason(err) is not None


def _network_reason(err: BaseException | None, read: float | None = None, connect: float | None = None) -> str | None:
    """What went wrong on the network, in words, for huggingface_hub's errors and those of its HTTP client (by
    class name: requests, httpx or httpx2 depending on its version); None for anything else. ``read`` and
    ``connect``: how long the request waited for its answer and to connect (default `timeouts`' first)."""
    seen = 0
    while err is not None and seen < 5:
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & {"TimeoutException", "Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout"}:
            wait = connect if "ConnectTimeout" in names else read
            return f"no answer within {wait or timeouts()[0]:g} s"
        if names & {"ConnectError", "ConnectionError", "NetworkError", "RemoteProtocolError", "ProxyError"}:
            text = str(err)
            return "the connection was refused" if "refused" in text.lower() else f"a network error ({text})"
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def hub_error(
    err: Exception,
    repo_id: str,
    what: str,
    revision: str | None = None,
    *,
    fetch: str | None = None,
    endpoint: str | None = None,
    downloading: bool = False,
) -> ReinError:
    """One readable error for a failed Hub download: offline, not found, no access, or the network. ``fetch``: the
    command that gets the file where there is a connection (default ``hf download REPO FILE``); ``downloading``:
    the failure came while the file itself was being downloaded (not while asking for it)."""
    from huggingface_hub import errors

    at = f"{repo_id}@{revision}" if revision else repo_id
    fetch = fetch or f"`hf download {repo_id} {what}" + (f" --revision {revision}`" if revision else "`")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, errors.GatedRepoError) or status in (401, 403):
        return ReinError(
            f"no access to {at} on the Hugging Face Hub (HTTP {status}): the repo is gated or private; "
            "log in with `hf auth login` (and accept its terms on the Hub), then rerun"
        )
    if isinstance(err, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
        return ReinError(f"{at} was not found on the Hugging Face Hub; check the name and revision")
    if isinstance(err, errors.RemoteEntryNotFoundError):
        return ReinError(f"{what} is not in {at} on the Hugging Face Hub; check the name and revision")
    if offline():
        return ReinError(
            f"could not get {what} of {at}: it is not in the local Hugging Face cache and the Hub is offline "
            f"(HF_HUB_OFFLINE=1 or --offline); run {fetch} where there is a connection, then rerun"
        )
    block = timeouts()[1] if downloading else None  # a download's requests wait this long, to connect too
    reason = _network_reason(err, block, block)
    if reason is not None:
        knob = "HF_HUB_DOWNLOAD_TIMEOUT" if downloading else "HF_HUB_ETAG_TIMEOUT"
        more = f", or allow it longer with {knob}=SECONDS" if reason.startswith("no answer") else ""
        return ReinError(
            f"could not reach the Hugging Face Hub at {endpoint_url(endpoint)} for {what} of {at}: {reason}; check "
            f"the connection and HF_ENDPOINT, then rerun{more}"
        )
    detail = f"HTTP {status}" if status else type(err).__name__
    return ReinError(
        f"could not get {what} of {at} from the Hugging Face Hub at {endpoint_url(endpoint)} ({detail}); rerun "
        f"later, or run {fetch} where the Hub answers"
    )


def push_folder(folder: Path, repo_id: str, *, private: bool = False, message: str = "Upload with rein") -> str:
    """Create ``repo_id`` (a model repo; kept if it exists) and upload every file of ``folder`` in one commit;
    returns the commit's URL."""
    from huggingface_hub import HfApi

    if offline():
        raise ReinError(
            f"pushing to {repo_id} needs the Hugging Face Hub, which is offline (HF_HUB_OFFLINE=1 or --offline); "
            "rerun without --offline and with HF_HUB_OFFLINE unset"
        )
    api = HfApi(endpoint=hub_endpoint())
    try:
        with hub_requests():
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    except Exception as err:
        raise push_error(err, repo_id) from err
    return str(getattr(commit, "commit_url", "") or f"{endpoint_url()}/{repo_id}")


def push_error(err: Exception, repo_id: str) -> ReinError:
    """One readable error for a failed upload, with the next step that fits: credentials, write access, the
    repo's name and organisation, the Hub's own failure, or the network."""
    from huggingface_hub import errors

    hub = endpoint_url()
    org = repo_id.split("/")[0]
    status = getattr(getattr(err, "response", None), "status_code", None)
    token = "a token with write access (`hf auth login`, or $HF_TOKEN)"
    if isinstance(err, errors.LocalTokenNotFoundError):
        return ReinError(f"pushing to {repo_id} needs a Hugging Face login: log in with {token}, then rerun")
    if status == 401:
        return ReinError(
            f"the Hugging Face Hub at {hub} did not accept the credentials for pushing to {repo_id} (HTTP 401): "
            f"log in with {token}, then rerun"
        )
    if status == 403:
        return ReinError(
            f"no write access to {repo_id} on the Hugging Face Hub at {hub} (HTTP 403): use {token} that may "
            f"write to {org}, or push to a repo under your own name"
        )
    if status == 404 or isinstance(err, errors.RepositoryNotFoundError):
        return ReinError(
            f"{repo_id} was not found on the Hugging Face Hub at {hub} (HTTP {status or 404}) and could not be "
            f"created there: check the repo name and that the organisation {org} exists and you belong to it"
        )
    if status is not None and status >= 500:
        return ReinError(
            f"the Hugging Face Hub at {hub} failed while pushing to {repo_id} (HTTP {status}, its side); retry "
            "later with the same command"
        )
    reason = _network_reason(err, UNTIMED_READ_TIMEOUT, timeouts()[0])
    if reason is not None:
        return ReinError(
            f"could not reach the Hugging Face Hub at {hub} to push to {repo_id}: {reason}; check the connection "
            "(and HF_ENDPOINT), then rerun the same command"
        )
    detail = f"HTTP {status}" if status else f"{type(err).__name__}: {err}".splitlines()[0]
    return ReinError(f"pushing to {repo_id} on the Hugging Face Hub at {hub} failed ({detail}); rerun the command")
