"""Backbone weights on the Hugging Face Hub: find them in the local cache, or download them explicitly."""

from __future__ import annotations

from pathlib import Path

from rein_cli.errors import ReinError

WEIGHTS_FILE = "model.safetensors"


def cached_file(repo_id: str, filename: str = WEIGHTS_FILE, cache_dir: Path | None = None) -> Path | None:
    """The file's path in the local Hub cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def download_file(
    repo_id: str, filename: str = WEIGHTS_FILE, cache_dir: Path | None = None, endpoint: str | None = None
) -> Path:
    """Download (or reuse from the cache) one file of a Hub repo, with the Hub's progress bar and a clear
    error when it fails. ``endpoint``: a Hub mirror (default: $HF_ENDPOINT or huggingface.co)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, endpoint=endpoint))
    except Exception as err:  # network, auth and offline errors all end here with one message
        raise ReinError(
            f"could not get {filename} of {repo_id} from the Hugging Face Hub ({type(err).__name__}); "
            f"check the connection, or fetch it on another machine with `hf download {repo_id} {filename}` "
            "and copy the Hugging Face cache here"
        ) from err
