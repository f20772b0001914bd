"""Resumable HTTP downloads: partial data staged as ``*.incomplete``, checked, then moved into place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rein_cli.errors import ReinError
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
    timeout: float = 60,
) -> Fetched:
    """Download ``url`` to ``target``, resuming an interrupted download; returns the file with its size and SHA-256.

    Partial data lives only in ``staging`` (default: ``.staging/`` beside ``target``) as ``<name>.incomplete`` and
    is resumed with an HTTP range request. The complete file is checked against ``size`` (else the size the server
    announced), ``sha256`` and ``md5`` (each when given) and only then renamed to ``target``; a mismatch removes the
    partial file. An existing ``target`` that passes the same checks is returned without any network access.
    ``opener`` (e.g. one carrying a login cookie) and ``headers`` go with the request. Every failure is a `ReinError`
    that says what to do; an interrupted download (error, full disk, Ctrl-C) keeps its partial file for a rerun.
    """
    target = Path(target)
    expected = {"sha256": sha256 and sha256.lower(), "md5": md5 and md5.lower()}
    if target.is_file():
        found = _existing(target, size, expected, progress)
        if found is not None:
            return found
        log.warning("%s does not match its expected size or checksum; downloading it again", target)
    folder = Path(staging) if staging is not None else target.parent / STAGING
    part = folder / f"{target.name}{INCOMPLETE}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReinError(f"cannot write to {folder}: {err.strerror}; choose a writable location") from err
    hashes = _hashes(expected)
    try:
        have = part.stat().st_size if part.is_file() else 0
        if size is not None and have > size:  # not a part of this file
            part.unlink()
            have = 0
        if size is not None and have == size:
            _hash_file(part, hashes, progress)  # complete already: no request needed
        else:
            _transfer(url, part, have, size, hashes, opener, dict(headers or {}), progress, timeout)
        actual = part.stat().st_size
        problem = _mismatch(target.name, actual, size, hashes, expected)
        if problem:
            part.unlink()
            raise ReinError(f"{problem}; the partial file was removed, rerun to download it again")
        _move(part, target)
    finally:
        if staging is None:  # the default staging folder goes once nothing is staged in it
            with contextlib.suppress(OSError):
                folder.rmdir()
    return Fetched(target, actual, hashes["sha256"].hexdigest())


def remote_size(url: str, *, timeout: float = 10) -> int | None:
    """The size a server announces for ``url`` (a HEAD request, redirects followed), or None when it does not say
    or cannot be asked (the download itself then reports the problem)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None
    return int(length) if length and length.isdigit() else None


def _existing(target: Path, size: int | None, expected: dict, progress: bool) -> Fetched | None:
    """``target`` as a `Fetched` when it passes every given check (the final path only ever holds complete files)."""
    actual = target.stat().st_size
    if size is not None and actual != size:
        return None
    hashes = _hashes(expected)
    _hash_file(target, hashes, progress)
    if _mismatch(target.name, actual, size, hashes, expected):
        return None
    return Fetched(target, actual, hashes["sha256"].hexdigest())


def _transfer(
    url: str,
    part: Path,
    have: int,
    size: int | None,
    hashes: dict,
    opener: urllib.request.OpenerDirector | None,
    headers: dict[str, str],
    progress: bool,
    timeout: float,
) -> None:
    """Append the rest of ``url`` to ``part`` (``have`` bytes already there), updating ``hashes`` over the whole."""
    name = part.name.removesuffix(INCOMPLETE)
    request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = (opener.open if opener is not None else urllib.request.urlopen)(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:
            raise _http_error(url, err) from err
        whole = _range_total(err.headers.get("Content-Range"))
        if whole is not None and whole != have:  # larger than the file on the server: not a part of it
            log.info("the partial %s does not fit the file on the server; downloading it from the start", name)
            part.unlink()
            return _transfer(url, part, 0, size, hashes, opener, headers, progress, timeout)
        _hash_file(part, hashes, progress)  # 416: nothing left to send, the part is complete
        return None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise ReinError(
            f"cannot download {url} ({_reason(err, timeout)}); check the connection, then rerun to resume"
        ) from err
    with response:
        if have and response.status != 206:
            log.info("the server ignored the range request; downloading %s from the start", name)
            have = 0
        elif have:
            start = _range_start(response.headers.get("Content-Range"))
            if start is not None and start != have:
                part.unlink()
                raise ReinError(f"{url} answered from byte {start}, not {have}; the partial file was removed, rerun")
            log.info("resuming %s at %s", name, _amount(have))
        length = response.headers.get("Content-Length")
        total = _range_total(response.headers.get("Content-Range")) if have else None
        if total is None and length and length.isdigit():
            total = have + int(length)
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise ReinError(
                f"{name} is {total} bytes on the server, expected {size} bytes; the partial file was removed, "
                "rerun to download it again"
            )
        total = size if size is not None else total
        if total is not None:
            _check_space(part.parent, total - have, name)
        if have:
            _hash_file(part, hashes, progress)
        done = have
        bar = Progress(total, name, unit="B", unit_scale=True, initial=have, bar=progress, leave=True)
        try:
            with bar, open(part, "ab" if have else "wb") as f:
                while chunk := _read(response, url, done, timeout):
                    f.write(chunk)
                    for digest in hashes.values():
                        digest.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except OSError as err:  # writing: reading raises ReinError
            if err.errno != errno.ENOSPC:
                raise ReinError(f"cannot write {part}: {err.strerror}; rerun to resume") from err
            more = f"it needs {_amount(total - done)} more ({_amount(total)} in all)" if total else "it needs more"
            raise ReinError(
                f"the disk of {part.parent} is full while downloading {name}: {more}; free some space there, "
                "then rerun to resume"
            ) from err
    if total is not None and done < total:
        raise ReinError(
            f"the download of {url} stopped after {_amount(done)} of {_amount(total)} (the connection was closed); "
            "rerun to resume"
        )
    return None


def _read(response: http.client.HTTPResponse, url: str, done: int, timeout: float) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as err:
        raise ReinError(
            f"the download of {url} broke off after {_amount(done)} ({_reason(err, timeout)}); check the connection, "
            "then rerun to resume"
        ) from err


def _hashes(expected: dict) -> dict:
    """The digests to compute: SHA-256 always (it is returned), MD5 when one is expected."""
    return {"sha256": hashlib.sha256(), **({"md5": hashlib.md5()} if expected.get("md5") else {})}


def _hash_file(path: Path, hashes: dict, progress: bool) -> None:
    with (
        open(path, "rb") as f,
        Progress(path.stat().st_size, f"checking {path.name}", unit="B", unit_scale=True, bar=progress) as bar,
    ):
        while block := f.read(CHUNK):
            for digest in hashes.values():
                digest.update(block)
            bar.update(len(block))


def _mismatch(name: str, actual: int, size: int | None, hashes: dict, expected: dict) -> str | None:
    """What differs from the expected size or checksums, or None."""
    if size is not None and actual != size:
        return f"{name} is {actual} bytes, expected {size} bytes"
    for kind, digest in hashes.items():
        if expected.get(kind) and digest.hexdigest() != expected[kind]:
            return f"{name} has {kind.upper()} {digest.hexdigest()}, expected {expected[kind]}"
    return None


def _http_error(url: str, err: urllib.error.HTTPError) -> ReinError:
    if err.code in (401, 403):
        return ReinError(
            f"access denied to {url} (HTTP {err.code}): the file may be private or need a login; check the address "
            "and your access"
        )
    if err.code == 404:
        return ReinError(f"not found: {url} (HTTP 404); check the file name, and the server or mirror address")
    then = "the server may be busy, rerun later to resume" if err.code >= 500 else "check the address"
    return ReinError(f"downloading {url} failed: HTTP {err.code} {err.reason}; {then}")


def _reason(err: BaseException, timeout: float) -> str:
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _range_start(header: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes 100-199/200``."""
    first = (header or "").removeprefix("bytes ").split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _range_total(header: str | None) -> int | None:
    """The whole size in ``Content-Range: bytes 100-199/200`` (or ``bytes */200``); None when unknown (``*``)."""
    whole = (header or "").rpartition("/")[2]
    return int(whole) if whole.isdigit() else None


def _check_space(folder: Path, need: int, name: str) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise ReinError(
            f"{name} needs {_amount(need)} but {folder} has {_amount(free)} free; free some space there, then rerun"
        )


def _move(part: Path, target: Path) -> None:
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


def _amount(n: float) -> str:
    """``512 B``, ``1.5 MB``, ``12.3 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for prefix in "kMGT":
        n /= 1000
        if n < 1000 or prefix == "T":
            break
    return f"{n:.1f} {prefix}B"
