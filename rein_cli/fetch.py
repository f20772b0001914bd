"""Resumable HTTP downloads: partial data staged as ``*.incomplete`` (locked while written), checked, then moved into
place; every request bounded in time (`Limits`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rein_cli.errors import ReinError
from rein_cli.net import Limits, http_error, open_url, reason
from rein_cli.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STAGING = ".staging"  # the default staging folder, beside the target
INCOMPLETE = ".incomplete"


@dataclass(frozen=True)
class Fetched:
    """A complete, verified file: its path, size in bytes and SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Staged:
    """A complete download still in staging: its path, size, SHA-256 (and MD5 when asked for), and the Content-Type
    of the answer that brought its last bytes (None when no request was needed)."""

    path: Path
    size: int
    sha256: str
    md5: str | None
    content_type: str | None


def fetch(
    url: str,
    target: Path,
    *,
    staging: Path | None = None,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    headers: Mapping[str, str] | None = None,
    progress: bool = True,
    limits: Limits | None = None,
) -> Fetched:
    """Download ``url`` to ``target``, resuming an interrupted download; returns the file with its size and SHA-256.

    Partial data lives only in ``staging`` (default: ``.staging/`` beside ``target``) as ``<name>.incomplete``, locked
    while written (`staged`). The complete file is checked against ``size`` (else the size the server announced),
    ``sha256`` and ``md5`` (each when given) and only then renamed to ``target``; a mismatch removes the partial
    file. An existing ``target`` that passes the same checks is returned without any network access. ``opener``
    (e.g. one carrying a login cookie) and ``headers`` go with the request. Every failure is a `ReinError` that says
    what to do; an interrupted download (error, full disk, Ctrl-C) keeps its partial file for a rerun.
    """
    target = Path(target)
    expected = {"sha256": sha256 and sha256.lower(), "md5": md5 and md5.lower()}
    if target.is_file():
        found = _existing(target, size, expected, progress)
        if found is not None:
            return found
        log.warning("%s does not match its expected size or checksum; downloading it again", target)
    folder = Path(staging) if staging is not None else target.parent / STAGING
    try:
        with staged(
            url,
            folder / f"{target.name}{INCOMPLETE}",
            size=size,
            md5=bool(expected["md5"]),
            opener=opener,
            headers=headers,
            progress=progress,
            limits=limits,
        ) as got:
            problem = _mismatch(target.name, got, size, expected)
            if problem:
                got.path.unlink()
                raise ReinError(f"{problem}; the partial file was removed, rerun to download it again")
            place(got.path, target)
    finally:
        if staging is None:  # the default staging folder goes once nothing is staged in it
            with contextlib.suppress(OSError):
                folder.rmdir()
    return Fetched(target, got.size, got.sha256)


@contextlib.contextmanager
def staged(
    url: str,
    part: Path,
    *,
    size: int | None = None,
    md5: bool = False,
    opener: urllib.request.OpenerDirector | None = None,
    headers: Mapping[str, str] | None = None,
    progress: bool = True,
    limits: Limits | None = None,
    label: str | None = None,
) -> Iterator[Staged]:
    """Download ``url`` into the staging file ``part`` (resuming the data already there) and yield it complete,
    all the while holding an exclusive ``flock`` on it: a second download into the same file, from any process, is
    refused at once. The caller checks the file and moves it into place (`place`) or deletes it before the ``with``
    ends. A staged file larger than ``size`` is not a part of this file and is started afresh. ``label`` names the
    download in messages and on the progress bar (default: the staging file's name without ``.incomplete``)."""
    limits = limits or Limits.from_env()
    part = Path(part)
    label = label or part.name.removesuffix(INCOMPLETE)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReinError(f"cannot write to {part.parent}: {err.strerror}; choose a writable location") from err
    with _locked(part, url):
        try:
            hashes = {"sha256": hashlib.sha256(), **({"md5": hashlib.md5()} if md5 else {})}
            have = part.stat().st_size
            if size is not None and have > size:  # not a part of this file
                os.truncate(part, 0)
                have = 0
            content_type = None
            if size is not None and have == size and have:
                _hash_file(part, hashes, progress)  # complete already: no request needed
            else:
                asked = dict(headers or {})
                content_type = _transfer(url, part, label, have, size, hashes, opener, asked, progress, limits)
            yield Staged(
                part,
                part.stat().st_size,
                hashes["sha256"].hexdigest(),
                hashes["md5"].hexdigest() if md5 else None,
                content_type,
            )
        finally:
            with contextlib.suppress(OSError):
                if part.stat().st_size == 0:  # nothing was written: no partial file to keep
                    part.unlink()


def remote_size(url: str, *, limits: Limits | None = None) -> int | None:
    """The size a server announces for ``url`` (a HEAD request, redirects followed, at most 5 s per wait), or None when
    it does not say or cannot be asked (the download itself then reports the problem)."""
    limits = (limits or Limits.from_env()).shorter(5.0)
    try:
        with open_url(urllib.request.Request(url, method="HEAD"), None, limits) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None
    return int(length) if length and length.isdigit() else None


def place(part: Path, target: Path) -> None:
    """Rename the verified ``part`` to ``target`` (atomically; through a copy beside ``target`` across disks)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(part, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            copy = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(part, copy)
                os.replace(copy, target)
            finally:
                copy.unlink(missing_ok=True)
            part.unlink()
    except OSError as err:
        raise ReinError(f"cannot move {part} to {target}: {err.strerror}; check {target.parent}, then rerun") from err


def amount(n: float) -> str:
    """``512 B``, ``1.5 MB``, ``12.3 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for prefix in "kMGT":
        n /= 1000
        if n < 1000 or prefix == "T":
            break
    return f"{n:.1f} {prefix}B"


@contextlib.contextmanager
def _locked(part: Path, url: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``part`` (created empty if missing). The lock is taken without waiting; the file
    is opened again when the one locked was renamed or removed meanwhile (its holder finished)."""
    import fcntl

    while True:
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise ReinError(f"cannot write {part}: {err.strerror}; choose a writable location") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReinError(
                f"another download of {url} is running (it holds the lock of {part}); wait for it to end, then "
                "run the same command again"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(part))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _existing(target: Path, size: int | None, expected: dict, progress: bool) -> Fetched | None:
    """``target`` as a `Fetched` when it passes every given check (the final path only ever holds complete files)."""
    actual = target.stat().st_size
    if size is not None and actual != size:
        return None
    hashes = {"sha256": hashlib.sha256(), **({"md5": hashlib.md5()} if expected.get("md5") else {})}
    _hash_file(target, hashes, progress)
    got = Staged(target, actual, hashes["sha256"].hexdigest(), hashes.get("md5") and hashes["md5"].hexdigest(), None)
    if _mismatch(target.name, got, size, expected):
        return None
    return Fetched(target, actual, got.sha256)


def _transfer(
    url: str,
    part: Path,
    name: str,
    have: int,
    size: int | None,
    hashes: dict,
    opener: urllib.request.OpenerDirector | None,
    headers: dict[str, str],
    progress: bool,
    limits: Limits,
) -> str | None:
    """Append the rest of ``url`` to ``part`` (``have`` bytes already there), updating ``hashes`` over the whole;
    returns the answer's Content-Type; ``name`` names the download in messages."""
    if have:
        _hash_file(part, hashes, progress)  # before the request: the answer's wait is timed on its own
    request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = open_url(request, opener, limits)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:
            raise http_error(url, err) from err
        whole = _range_total(err.headers.get("Content-Range"))
        if whole is not None and whole != have:  # larger than the file on the server: not a part of it
            log.info("the partial %s does not fit the file on the server; downloading it from the start", name)
            os.truncate(part, 0)
            _restart(hashes)
            return _transfer(url, part, name, 0, size, hashes, opener, headers, progress, limits)
        return None  # 416: nothing left to send, the part is complete
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise ReinError(
            f"cannot download {url} ({reason(err, limits)}); check the connection, then rerun to resume"
        ) from err
    with response:
        content_type = response.headers.get("Content-Type")
        if have and response.status != 206:
            log.info("the server ignored the range request; downloading %s from the start", name)
            have = 0
            _restart(hashes)
        elif have:
            start = _range_start(response.headers.get("Content-Range"))
            if start is not None and start != have:
                os.truncate(part, 0)
                raise ReinError(f"{url} answered from byte {start}, not {have}; the partial file was removed, rerun")
            log.info("resuming %s at %s", name, amount(have))
        length = response.headers.get("Content-Length")
        total = _range_total(response.headers.get("Content-Range")) if have else None
        if total is None and length and length.isdigit():
            total = have + int(length)
        if size is not None and total is not None and total != size:
            os.truncate(part, 0)
            raise ReinError(
                f"{name} is {total} bytes on the server, expected {size} bytes; the partial file was removed, "
                "rerun to download it again"
            )
        total = size if size is not None else total
        if total is not None:
            _check_room(part, total, have, name)
        done = _receive(response, url, part, name, have, total, hashes, progress, limits)
    if total is not None and done < total:
        raise ReinError(
            f"the download of {url} stopped after {amount(done)} of {amount(total)} (the connection was closed); "
            "rerun to resume"
        )
    return content_type


def _restart(hashes: dict) -> None:
    """Forget what the digests have seen: the file starts again from its first byte."""
    for kind in hashes:
        hashes[kind] = hashlib.new(kind)


def _receive(
    response: http.client.HTTPResponse,
    url: str,
    part: Path,
    name: str,
    have: int,
    total: int | None,
    hashes: dict,
    progress: bool,
    limits: Limits,
) -> int:
    """Write the body to ``part`` (appended after ``have`` bytes, else from the start); returns the size reached.
    Stops when the body arrives slower than ``limits.min_rate`` over any ``limits.read`` seconds."""
    done = window_bytes = have
    window = time.monotonic()
    bar = Progress(total, name, unit="B", unit_scale=True, initial=have, bar=progress, leave=True)
    try:
        with bar, open(part, "ab" if have else "wb") as f:
            while chunk := _read(response, url, done, limits):
                f.write(chunk)
                for digest in hashes.values():
                    digest.update(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if limits.min_rate and now - window >= limits.read:
                    if done - window_bytes < limits.min_rate * (now - window):
                        raise ReinError(
                            f"the download of {url} is too slow: {amount(done - window_bytes)} in the last "
                            f"{now - window:.0f} s, under the minimum of {amount(limits.min_rate)}/s ($REIN_MIN_RATE); "
                            "its partial file is kept: check the connection, then rerun to resume"
                        )
                    window, window_bytes = now, done
    except OSError as err:  # writing: reading raises ReinError
        raise _write_error(err, part, total, name) from err
    return done


def _write_error(err: OSError, part: Path, total: int | None, name: str) -> ReinError:
    have = part.stat().st_size if part.exists() else 0
    if err.errno == errno.EFBIG:
        return _file_size_limit(name, f"{part} is {have} bytes of {amount(total) if total else 'an unknown size'}")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        more = f"it needs {amount(total - have)} more ({amount(total)} in all)" if total else "it needs more"
        return ReinError(
            f"the disk of {part.parent} is full while downloading {name}: {more}; free some space there, "
            "then rerun to resume"
        )
    return ReinError(f"cannot write {part}: {err.strerror}; rerun to resume")


def _file_size_limit(name: str, where: str) -> ReinError:
    """The file-size limit (``ulimit -f``, RLIMIT_FSIZE) stops the download of ``name``; ``where``: how far it got."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{limit} bytes (`ulimit -f` says {limit // 1024})"
    return ReinError(
        f"the file-size limit is reached while downloading {name}: the limit is {shown} and {where}; raise it "
        "(`ulimit -f unlimited`), then run the same command again to resume"
    )


def _check_room(part: Path, total: int, have: int, name: str) -> None:
    """Enough free disk for the rest, and a file-size limit (``ulimit -f``) that lets the file reach ``total``."""
    import resource

    free = shutil.disk_usage(part.parent).free
    if total - have > free:
        raise ReinError(
            f"{name} needs {amount(total - have)} but {part.parent} has {amount(free)} free; free some space there, "
            "then rerun"
        )
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and total > limit:
        raise _file_size_limit(name, f"the file is {total} bytes ({amount(total)})")


def _read(response: http.client.HTTPResponse, url: str, done: int, limits: Limits) -> bytes:
    """What has arrived of the body (at most one socket read: a trickle is seen as one)."""
    try:
        return response.read1(CHUNK)
    except (OSError, http.client.HTTPException) as err:
        raise ReinError(
            f"the download of {url} broke off after {amount(done)} ({reason(err, limits)}); check the connection, "
            "then rerun to resume"
        ) from err


def _hash_file(path: Path, hashes: dict, progress: bool) -> None:
    with (
        open(path, "rb") as f,
        Progress(path.stat().st_size, f"checking {path.name}", unit="B", unit_scale=True, bar=progress) as bar,
    ):
        while block := f.read(CHUNK):
            for digest in hashes.values():
                digest.update(block)
            bar.update(len(block))


def _mismatch(name: str, got: Staged, size: int | None, expected: dict) -> str | None:
    """What differs from the expected size or checksums, or None."""
    if size is not None and got.size != size:
        return f"{name} is {got.size} bytes, expected {size} bytes"
    for kind in ("sha256", "md5"):
        actual = getattr(got, kind)
        if expected.get(kind) and actual != expected[kind]:
            return f"{name} has {kind.upper()} {actual}, expected {expected[kind]}"
    return None


def _range_start(header: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes 100-199/200``."""
    first = (header or "").removeprefix("bytes ").split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _range_total(header: str | None) -> int | None:
    """The whole size in ``Content-Range: bytes 100-199/200`` (or ``bytes */200``); None when unknown (``*``)."""
    whole = (header or "").rpartition("/")[2]
    return int(whole) if whole.isdigit() else None
