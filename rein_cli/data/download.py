"""`rein data download`: Cityscapes through its official login (resumable, MD5-checked); instructions for the rest."""

from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rein_cli.config import rein_home
from rein_cli.data.catalog import prepare_target
from rein_cli.data.manifest import MANIFEST, Manifest, read_manifest
from rein_cli.data.prepare import check_output, prepare
from rein_cli.data.registry import DatasetSpec, find_spec
from rein_cli.errors import ReinError
from rein_cli.fetch import fetch

log = logging.getLogger(__name__)

CITYSCAPES_URL = "https://www.cityscapes-dataset.com"
CITYSCAPES_PACKAGES = {"gtFine_trainvaltest.zip": 1, "leftImg8bit_trainvaltest.zip": 3}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 after the login form is the success signal; do not follow it


def cityscapes_session(username: str, password: str, base_url: str = CITYSCAPES_URL) -> urllib.request.OpenerDirector:
    """Log in; returns an opener carrying the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    data = urllib.parse.urlencode({"username": username, "password": password, "submit": "Login"}).encode()
    try:
        response = opener.open(f"{base_url}/login/", data=data, timeout=60)
        status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except urllib.error.URLError as err:
        raise ReinError(f"cannot reach {base_url} ({err.reason}); check the connection") from err
    if status != 302:
        raise ReinError(
            "the Cityscapes login failed: check CITYSCAPES_USERNAME / CITYSCAPES_PASSWORD (or the saved login)"
        )
    return opener


def credentials(store: Path | None = None) -> tuple[str | None, str | None]:
    """Username and password from CITYSCAPES_USERNAME / CITYSCAPES_PASSWORD, else from a saved file."""
    user, password = os.environ.get("CITYSCAPES_USERNAME"), os.environ.get("CITYSCAPES_PASSWORD")
    if (not user or not password) and store is not None and store.is_file():
        saved = json.loads(store.read_text())
        user, password = user or saved.get("username"), password or saved.get("password")
    return user, password


def _save_credentials(store: Path, username: str, password: str) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"username": username, "password": password}, f)


def download_cityscapes(
    dest: Path,
    username: str,
    password: str,
    *,
    packages: tuple[str, ...] = tuple(CITYSCAPES_PACKAGES),
    base_url: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download Cityscapes packages into ``dest`` (resumable from ``dest/.staging/``, MD5-checked); returns the
    archive paths."""
    base_url = base_url or os.environ.get("REIN_CITYSCAPES_URL", CITYSCAPES_URL)
    opener = cityscapes_session(username, password, base_url)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in packages:
        package = CITYSCAPES_PACKAGES[name]
        try:
            md5 = opener.open(f"{base_url}/md5-sum/?packageID={package}", timeout=60).read().decode().split()[0]
        except (urllib.error.URLError, IndexError) as err:
            raise ReinError(f"cannot get the MD5 of {name} from {base_url}: {err}") from err
        if len(md5) != 32 or not all(c in "0123456789abcdef" for c in md5.lower()):
            raise ReinError(f"{base_url} did not return an MD5 for {name} (session expired?); rerun")
        url = f"{base_url}/file-handling/?packageID={package}"
        paths.append(fetch(url, dest / name, md5=md5.lower(), opener=opener, progress=progress).path)
    return paths


def manual_instructions(spec: DatasetSpec, data_root: Path) -> str:
    """What to fetch for a dataset without an automatic download, and the prepare command that follows."""
    sources = " ".join(f"--from {a}" for a in spec.downloads or spec.archives) or "--from EXTRACTED_FOLDER"
    return (
        f"{spec.name} must be downloaded by hand ({spec.licence}).\n{spec.instructions}\n"
        f"Then: rein data prepare {spec.name} {sources}\n"
        f"(or --from the extracted folder); it is prepared into {prepare_target(spec, data_root)}."
    )


@dataclass(frozen=True)
class Downloaded:
    """The prepared dataset, or (``manifest`` None) what to fetch by hand for one without an automatic download."""

    manifest: Manifest | None
    instructions: str = ""


def download(
    name: str,
    data_root: Path,
    *,
    dest: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    save_credentials: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Downloaded:
    """`rein data download`: download a dataset where its source allows it (Cityscapes), then prepare it.

    The Cityscapes login comes from ``username`` / ``password``, else CITYSCAPES_USERNAME / CITYSCAPES_PASSWORD,
    else the credentials saved under $REIN_HOME (``save_credentials`` stores them there, mode 600); nothing is
    ever asked interactively. Other datasets return the instructions for fetching them by hand. A prepared copy is
    replaced only with ``overwrite`` (checked before anything is downloaded).
    """
    spec, data_root = find_spec(name), Path(data_root)
    if spec.download != "cityscapes":
        return Downloaded(None, manual_instructions(spec, data_root))
    check_output(prepare_target(spec, data_root), overwrite, f"rein data download {spec.name} --overwrite")
    store = rein_home() / "credentials" / "cityscapes.json"
    saved_user, saved_password = credentials(store)
    username, password = username or saved_user, password or saved_password
    if not username or not password:
        raise ReinError(
            "Cityscapes needs a login: set CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD (register at "
            "https://www.cityscapes-dataset.com/register/); --save-credentials keeps them for later runs"
        )
    archives = download_cityscapes(dest or data_root / "downloads" / spec.name, username, password, progress=progress)
    if save_credentials:
        _save_credentials(store, username, password)
    prepare(spec.name, archives, prepare_target(spec, data_root), overwrite=overwrite, progress=progress)
    return Downloaded(read_manifest(prepare_target(spec, data_root) / MANIFEST))
