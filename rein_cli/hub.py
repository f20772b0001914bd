"""The Hugging Face Hub, low level: files in the local cache, downloads with one clear error each, repo snapshots."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rein_cli.errors import ReinError

WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILES = ("config.json", "model.safetensors")  # what rebuilding a rein checkpoint from the Hub needs
HF_URI = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def offline() -> bool:
    """True when the Hub must not be contacted: ``HF_HUB_OFFLINE=1`` (``--offline`` sets it for the command)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` (a Hub mirror), read now; None for the default huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or None


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


def revision_of(path: Path) -> str | None:
    """The Hub commit a cached file belongs to (its ``snapshots/<commit>/`` folder), or None."""
    parent = Path(path).parent
    is_commit = parent.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parent.name)
    return parent.name if is_commit else None


def file_size(
    repo_id: str, filename: str = WEIGHTS_FILE, revision: str | None = None, timeout: float = 10
) -> int | None:
    """The size in bytes the Hub reports for a file (a HEAD request within ``timeout`` s), or None when it cannot
    be asked."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if offline():
        return None
    try:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub_endpoint())
        return get_hf_file_metadata(url, endpoint=hub_endpoint(), timeout=timeout).size
    except Exception:  # the download that follows reports the failure properly
        return None


def download_file(
    repo_id: str,
    filename: str = WEIGHTS_FILE,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
) -> Path:
    """Download (or reuse from the cache) one file of a Hub repo, with the Hub's progress bar; every failure is
    one `ReinError` that says what to do. ``endpoint``: a Hub mirror (default: $HF_ENDPOINT or huggingface.co)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id,
            filename,
            cache_dir=cache_dir,
            endpoint=endpoint or hub_endpoint(),
            revision=revision,
            local_files_only=offline(),
        )
        return Path(path)
    except Exception as err:
        raise hub_error(err, repo_id, filename, revision) from err


def snapshot(repo_id: str, revision: str | None = None, *, files: tuple[str, ...] = CHECKPOINT_FILES) -> Path:
    """The local folder holding ``files`` of a Hub repo at one commit (``revision``: a branch, tag or commit;
    default main); each is downloaded once, then read from the cache."""
    paths = [download_file(repo_id, files[0], revision=revision)]
    commit = revision_of(paths[0]) or revision  # the rest from the same commit, even if main moves meanwhile
    paths += [download_file(repo_id, name, revision=commit) for name in files[1:]]
    return paths[0].parent


def hub_error(err: Exception, repo_id: str, what: str, revision: str | None = None) -> ReinError:
    """One readable error for a failed Hub access: offline, not found, no access, or the network."""
    from huggingface_hub import errors

    at = f"{repo_id}@{revision}" if revision else repo_id
    fetch = f"`hf download {repo_id} {what.split(', ')[0]}" + (f" --revision {revision}`" if revision else "`")
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
    if isinstance(err, errors.LocalEntryNotFoundError) and offline():
        return ReinError(
            f"could not get {what} of {at}: it is not in the local Hugging Face cache and the Hub is offline "
            f"(HF_HUB_OFFLINE=1 or --offline); fetch it where there is a connection with {fetch}"
        )
    return ReinError(
        f"could not get {what} of {at} from the Hugging Face Hub ({type(err).__name__}); check the connection "
        f"and rerun, or fetch it on another machine with {fetch} and copy the Hugging Face cache here"
    )


def push_folder(folder: Path, repo_id: str, *, private: bool = False, message: str = "Upload with rein") -> str:
    """Create ``repo_id`` (a model repo; kept if it exists) and upload every file of ``folder`` in one commit;
    returns the commit's URL."""
    from huggingface_hub import HfApi

    if offline():
        raise ReinError(f"pushing to {repo_id} needs the Hugging Face Hub, which is offline (HF_HUB_OFFLINE=1)")
    api = HfApi(endpoint=hub_endpoint())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    except Exception as err:
        raise push_error(err, repo_id) from err
    return str(getattr(commit, "commit_url", "") or f"https://huggingface.co/{repo_id}")


def push_error(err: Exception, repo_id: str) -> ReinError:
    """One line for a failed upload to ``repo_id``, with what makes the next try succeed: a login that may write
    there, a repo of one's own, or the connection."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    owner = repo_id.split("/")[0]
    where = hub_endpoint() or "https://huggingface.co"
    if status == 401:
        return ReinError(
            f"pushing to {repo_id} needs a login to {where} with write access (HTTP 401): log in with `hf auth login` "
            "(a token with the write role) or set HF_TOKEN, then run the same command again"
        )
    if status == 403:
        return ReinError(
            f"your login may not write to {repo_id} (HTTP 403): push to a repo under your own name or an "
            f"organisation you may write to, or log in (`hf auth login`) with a token that may write to {owner}"
        )
    if status is not None:
        text = " ".join(str(getattr(response, "text", "") or "").split())[:200]
        return ReinError(
            f"the Hugging Face Hub refused the upload to {repo_id} (HTTP {status}{': ' + text if text else ''}); "
            "check the repo id and your rights to it, then run the same command again"
        )
    return ReinError(
        f"could not reach the Hugging Face Hub at {where} to push {repo_id} ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}); check the connection, then run the same command again"
    )
