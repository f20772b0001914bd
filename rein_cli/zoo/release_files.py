"""A release file is trusted only once checked. It is downloaded into a staging file of its own (one per release file
and source, locked while written), loaded with ``weights_only=True`` and converted in memory; only then is it kept,
its first download's SHA-256 recorded, and its conversion written. Anything else is deleted with one line saying
what came back. ``rein pull NAME --refresh`` replaces a record after saying what differs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from rein_cli.errors import ReinError
from rein_cli.fetch import CHUNK, INCOMPLETE, Staged, amount, place, remote_size, staged
from rein_cli.io import write_json
from rein_cli.zoo.releases import Release

if TYPE_CHECKING:
    from rein_cli.models.segmentor import Segmentor

log = logging.getLogger(__name__)

HASHES_FILE = "hashes.json"  # in $REIN_HOME/zoo: {release name: {"sha256", "size", "url"}} of first downloads


def read_records(zoo: Path) -> dict[str, dict]:
    """The recorded first downloads, {release name: {"sha256", "size", "url"}} (empty when there are none)."""
    try:
        records = json.loads((zoo / HASHES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def staging_file(zoo: Path, release: Release, url: str) -> Path:
    """``staging/<tag>--<file>--<12 hex digits of the URL's SHA-256>.incomplete``: its own for each release file and
    each source, so releases that share a file name (nine are ``iter_40000_published.pth``) or two mirrors of one
    release never share partial data."""
    tag = re.sub(r"[^\w.+()-]", "_", urllib.parse.unquote(release.tag))
    file = re.sub(r"[^\w.+()-]", "_", urllib.parse.unquote(release.file))
    source = hashlib.sha256(url.encode()).hexdigest()[:12]
    return zoo / "staging" / f"{tag}--{file}--{source}{INCOMPLETE}"


def kept_file(zoo: Path, release: Release) -> Path:
    """Where a checked release file is kept: ``releases/<name>/<file>``."""
    return zoo / "releases" / release.name / release.file


def checked_release(
    release: Release, url: str, zoo: Path, *, progress: bool = True, refresh: bool = False, offline: bool = False
) -> Segmentor:
    """The release as our model, from its kept file or a new download, each checked (`_checked`) before anything
    about it is kept or recorded. A kept file is compared with the published or recorded SHA-256; a new download too,
    unless ``refresh``: then the record is replaced, after saying what differs. Without a record the first good
    download's SHA-256 and size are recorded."""
    records = read_records(zoo)
    record = records.get(release.name)
    if refresh and release.sha256:
        raise ReinError(
            f"{release.name} has a published SHA-256; --refresh replaces only hashes recorded from a first download"
        )
    _drop_shared_partial(zoo, release)
    kept = kept_file(zoo, release)
    if kept.is_file() and not refresh:
        return _from_kept(release, kept, url, zoo, record)
    if offline:
        why = "--refresh needs a connection" if refresh else f"{release.name} is not pulled and the network is off"
        raise ReinError(f"{why}; run `rein pull {release.name}{' --refresh' if refresh else ''}` with a connection")
    if refresh:
        before = f"recorded {_describe(record)}" if record else "no download is recorded"
        log.info("%s: %s; downloading %s again (%s)", release.name, before, url, _size(remote_size(url)))
    else:
        log.info("downloading %s: %s (%s; %s)", release.name, url, _size(remote_size(url)), release.licence)
    expected = None if refresh or release.sha256 else (record or {}).get("sha256")
    with staged(url, staging_file(zoo, release, url), progress=progress, label=release.name) as got:
        model = _checked(got, release, url, f"{url} sent", f"it was deleted and nothing was recorded; {_remedy(url)}")
        if release.sha256 and got.sha256 != release.sha256:
            got.path.unlink()
            raise ReinError(
                f"{url} sent a file with SHA-256 {got.sha256}, not the published {release.sha256} of {release.name}: "
                f"it was deleted; {_remedy(url)}"
            )
        if expected and got.sha256 != expected:
            raise ReinError(
                f"{url} sent a Rein release file that differs from the one recorded for {release.name}: SHA-256 "
                f"{got.sha256[:16]}... ({got.size} bytes) where {zoo / HASHES_FILE} has {_describe(record, 16)}; it "
                f"is kept in staging: to check it and take it as the release, run `rein pull {release.name} --refresh`"
            )
        changed = _tell_differences(release.name, record, got, url) if refresh else record is None
        place(got.path, kept)
    if changed and not release.sha256:
        _record(zoo, release.name, {"sha256": got.sha256, "size": got.size, "url": url})
    return model


def _from_kept(release: Release, kept: Path, url: str, zoo: Path, record: dict | None) -> Segmentor:
    """The model of a release file kept by an earlier pull, checked again (an older rein kept files unchecked)."""
    sha = hashlib.sha256()
    with open(kept, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
    got = Staged(kept, kept.stat().st_size, sha.hexdigest(), None, None)
    refresh = f"run `rein pull {release.name} --refresh` to download it again and record the new file once it passes"
    came_from = ", and its recorded SHA-256 came from it" if record and record.get("sha256") == got.sha256 else ""
    model = _checked(
        got, release, url, f"the kept release file {kept} is", f"it was deleted{came_from}; {refresh} the checks"
    )
    if release.sha256 and got.sha256 != release.sha256:
        kept.unlink()
        raise ReinError(
            f"the kept release file {kept} has SHA-256 {got.sha256}, not the published {release.sha256} of "
            f"{release.name}: it was deleted; run `rein pull {release.name}` to download it again"
        )
    if record and got.sha256 != record.get("sha256"):
        raise ReinError(
            f"the kept release file {kept} (SHA-256 {got.sha256[:16]}..., {got.size} bytes) differs from the one "
            f"recorded for {release.name} ({_describe(record, 16)}); {refresh} the checks"
        )
    if not release.sha256 and record is None:
        _record(zoo, release.name, {"sha256": got.sha256, "size": got.size, "url": url})
    return model


def _checked(got: Staged, release: Release, url: str, subject: str, after: str) -> Segmentor:
    """``got`` converted in memory, which loads it with ``weights_only=True`` and checks every key the conversion
    needs; any failure deletes the file and raises one line: ``subject``, what the file is, then ``after`` (what
    became of it, and what to do)."""
    from rein_cli.engine.convert import NotACheckpoint, official_model_args, official_segmentor, read_downloaded

    provenance = {"adapter": release.name, "source": url, "sha256": got.sha256, "size": got.size}
    try:
        state = read_downloaded(got.path)
        try:
            official_model_args(state)
        except ReinError as err:
            raise NotACheckpoint(f"a PyTorch file without the keys of a Rein checkpoint ({_clause(err)})") from err
        try:
            return official_segmentor(
                state,
                release.backbone,
                crop_size=release.crop,
                settings=release.model_settings(),
                provenance=provenance,
            )
        except ReinError as err:
            raise NotACheckpoint(f"a Rein checkpoint that does not fit {release.backbone} ({_clause(err)})") from err
    except NotACheckpoint as err:
        got.path.unlink(missing_ok=True)
        kind = f", {got.content_type}" if got.content_type else ""
        raise ReinError(
            f"{subject} {err.what} ({amount(got.size)}{kind}), not the release file of {release.name}: {after}"
        ) from err


def _remedy(url: str) -> str:
    mirror = os.environ.get("REIN_RELEASES_URL")
    if mirror:
        return f"check the mirror (REIN_RELEASES_URL={mirror}), then run the same command again"
    return "the server may be failing: run the same command again later, or set REIN_RELEASES_URL to a mirror"


def _tell_differences(name: str, record: dict | None, got: Staged, url: str) -> bool:
    """Log what differs between the recorded download and this one, field by field; whether anything does."""
    if record is None:
        log.info("%s: recording this download: SHA-256 %s, %d bytes, from %s", name, got.sha256, got.size, url)
        return True
    new = {"sha256": got.sha256, "size": got.size, "url": url}
    changed = [key for key in new if record.get(key) != new[key]]
    if not changed:
        log.info("%s: this download is the recorded one (%s); the record is unchanged", name, _describe(record))
        return False
    log.info("%s: this download differs from the recorded one; the record is replaced with it:", name)
    labels = {"sha256": "SHA-256", "size": "size", "url": "from"}
    for key in new:
        old = record.get(key, "-")
        line = f"{old} -> {new[key]}" if key in changed else f"{new[key]} (unchanged)"
        log.info("  %-8s %s", labels[key], line)
    return True


def _record(zoo: Path, name: str, entry: dict) -> None:
    """Set ``name``'s record, under a lock on the zoo folder: two pulls that finish at once both keep theirs."""
    import fcntl

    zoo.mkdir(parents=True, exist_ok=True)
    fd = os.open(zoo, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        records = read_records(zoo)
        records[name] = entry
        write_json(zoo / HASHES_FILE, records)
    finally:
        os.close(fd)
    log.info("%s: recorded SHA-256 %s (%d bytes) in %s", name, entry["sha256"], entry["size"], zoo / HASHES_FILE)


def _describe(record: dict | None, digits: int = 64) -> str:
    if not record:
        return "no recorded download"
    sha = str(record.get("sha256", "?"))
    short = sha[:digits] + ("..." if digits < len(sha) else "")
    return f"SHA-256 {short}, {record.get('size')} bytes, from {record.get('url')}"


def _drop_shared_partial(zoo: Path, release: Release) -> None:
    """Remove a partial download left by an older rein under the name that nine releases shared: it may mix files."""
    shared = zoo / "staging" / f"{release.file}{INCOMPLETE}"
    if shared.is_file():
        shared.unlink(missing_ok=True)
        log.info("removed %s: a partial download of an older rein, under a name several releases shared", shared)


def _clause(err: Exception) -> str:
    return str(err).rstrip(".")


def _size(size: int | None) -> str:
    return "size unknown" if size is None else amount(size)
