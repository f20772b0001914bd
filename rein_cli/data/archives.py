"""Archives: safe extraction of zip (also split .z01/.zip), tar; checksums; free-space checks; resumable."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import posixpath
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from rein_cli.errors import DISK_FULL, ReinError
from rein_cli.io import write_json
from rein_cli.progress import Progress

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".z01")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (
        name.endswith(ARCHIVE_SUFFIXES) or (len(name) > 4 and name[-4:-2] == ".z" and name[-2:].isdigit())
    )


def md5sum(path: Path, *, progress: bool = True, chunk: int = 1 << 22) -> str:
    """The file's MD5 (hex), reporting progress: archives run to tens of gigabytes."""
    digest = hashlib.md5()
    with (
        open(path, "rb") as f,
        Progress(path.stat().st_size, f"md5 {path.name}", unit="B", unit_scale=True, bar=progress) as bar,
    ):
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


class _Concatenated(io.RawIOBase):
    """Several files read as one (the parts of a split zip: name.z01, name.z02, ..., name.zip)."""

    def __init__(self, parts: list[Path]) -> None:
        self.files = [open(p, "rb") for p in parts]  # noqa: SIM115  closed in close()
        self.sizes = [p.stat().st_size for p in parts]
        self.starts = [sum(self.sizes[:i]) for i in range(len(parts))]
        self.total, self.pos = sum(self.sizes), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.total + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer), 0
        while done < len(view) and self.pos < self.total:
            i = max(j for j, s in enumerate(self.starts) if s <= self.pos)
            f = self.files[i]
            f.seek(self.pos - self.starts[i])
            n = f.readinto(view[done : done + min(len(view) - done, self.starts[i] + self.sizes[i] - self.pos)])
            if not n:
                break
            done += n
            self.pos += n
        return done

    def close(self) -> None:
        for f in self.files:
            f.close()
        super().close()


def _split_parts(path: Path) -> list[Path]:
    """name.z01, name.z02, ... then name.zip for a split zip; [path] otherwise."""
    base = path.name[: -len(path.suffix)] if path.suffix else path.name  # "x_v2.0.zip" -> "x_v2.0"
    parts = sorted(path.parent.glob(glob.escape(base) + ".z[0-9][0-9]"))
    return [*parts, path.parent / f"{base}.zip"] if parts else [path]


def _open_zip(path: Path) -> zipfile.ZipFile:
    parts = _split_parts(path)
    if len(parts) == 1:
        return zipfile.ZipFile(path)
    if not parts[-1].is_file():
        raise ReinError(f"split archive {parts[0].name} needs its last part {parts[-1].name}; download every part")
    stream = _Concatenated(parts)
    archive = zipfile.ZipFile(stream)
    # Offsets in a split zip are relative to the part (disk) each entry starts on; zipfile added the start of
    # the part holding the central directory to all of them.
    cd_disk = zipfile._EndRecData(stream)[zipfile._ECD_DISK_START]
    for info in archive.infolist():
        info.header_offset += stream.starts[info.volume] - stream.starts[cd_disk]
    return archive


class Member(NamedTuple):
    """An archive member as extraction sees it: its name, size, kind ("file", "dir", "symlink", "hardlink") and
    the target of a link (a symbolic link's relative to its folder, a hard link's to the archive's root)."""

    name: str
    size: int
    kind: str
    link: str | None = None


def _members(archive_path: Path) -> list[Member]:
    """Every member that extraction writes; errors for unreadable archives."""
    try:
        if archive_path.name.lower().endswith(".zip") or archive_path.suffix.lower().startswith(".z"):
            with _open_zip(archive_path) as z:
                out = []
                for info in z.infolist():
                    kind = "symlink" if stat.S_ISLNK(info.external_attr >> 16) else "dir" if info.is_dir() else "file"
                    out.append(Member(info.filename, info.file_size, kind, "" if kind == "symlink" else None))
                return out
        with tarfile.open(archive_path) as t:
            return [
                Member(m.name, m.size, _KINDS[m.type], m.linkname if m.issym() or m.islnk() else None)
                for m in t.getmembers()
                if m.isfile() or m.isdir() or m.issym() or m.islnk()
            ]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise ReinError(f"cannot read archive {archive_path} ({err}); is it complete? download it again") from err


_KINDS = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.DIRTYPE: "dir"} | dict.fromkeys(
    tarfile.REGULAR_TYPES, "file"
)
_FILTER_ERRORS = getattr(tarfile, "FilterError", ())  # Python 3.12, 3.11.4
_MAX_HOPS = 40  # links followed in one path before it counts as a loop (Linux's own limit)
REFUSED = (
    "nothing was extracted; no dataset's own archive holds such a member: download the archive again from the "
    "dataset's site, or extract it yourself, check what it holds, and give the folder to --from"
)


def _norm(name: str) -> str:
    return posixpath.normpath(name.replace("\\", "/")).lstrip("/") if name else ""


def _check_members(archive: Path, members: list[Member]) -> None:
    """Refuse the whole archive, before anything is written, when a member would land outside the extraction
    folder: an absolute path or '..', a symbolic link whose target leaves the folder (followed, as the file system
    will, through the archive's other links), a member written through such a link, a hard link to a place outside
    or to another link; and symbolic links in a zip. Each error names the member, its target and the way out."""
    links = {_norm(m.name): m.link.replace("\\", "/") for m in members if m.kind == "symlink" and m.link}
    kinds = {_norm(m.name): m.kind for m in members}
    for member in members:
        name = member.name.replace("\\", "/")
        norm = posixpath.normpath(name)
        if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm == ".." or norm.startswith("../"):
            raise ReinError(
                f"archive {archive} contains the unsafe path {member.name!r} (outside the folder); {REFUSED}"
            )
        where = _resolve(posixpath.dirname(name), links)  # as written: a '..' after a link goes where the link goes
        if where is None:
            raise ReinError(
                f"archive {archive}: its member {member.name!r} would be written through a link that leads outside "
                f"the folder it is extracted into; {REFUSED}"
            )
        if member.kind == "symlink" and not member.link:
            raise ReinError(
                f"archive {archive} contains the symbolic link {member.name!r}, which rein does not extract from a "
                f"zip; {REFUSED}"
            )
        if member.kind == "symlink":
            if member.link.startswith("/") or _resolve(posixpath.join(where, member.link), links) is None:
                raise ReinError(
                    f"archive {archive}: its link {member.name!r} -> {member.link!r} leads outside the folder it is "
                    f"extracted into{_through(where, member.link, links)}; {REFUSED}"
                )
        elif member.kind == "hardlink":
            target = posixpath.normpath(member.link.replace("\\", "/"))
            if target.startswith(("/", "../")) or target == ".." or _resolve(target, links) is None:
                raise ReinError(
                    f"archive {archive}: its hard link {member.name!r} -> {member.link!r} leads outside the folder it "
                    f"is extracted into; {REFUSED}"
                )
            if kinds.get(_norm(target)) == "symlink" or _resolve(target, links) != _norm(target):
                raise ReinError(
                    f"archive {archive}: its hard link {member.name!r} -> {member.link!r} is a link to a link, which "
                    f"extraction refuses; {REFUSED}"
                )


def _resolve(path: str, links: dict[str, str]) -> str | None:
    """``path`` (relative to the extraction folder) with every part that is one of the archive's symbolic ``links``
    replaced by its target, as the file system follows them; None when it leaves the folder or loops."""
    parts, done, hops = [p for p in path.split("/") if p not in ("", ".")], [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        here = "/".join([*done, part])
        if here in links:
            hops += 1
            if hops > _MAX_HOPS or links[here].startswith("/"):
                return None
            parts = [p for p in links[here].split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return "/".join(done)


def _through(folder: str, link: str, links: dict[str, str]) -> str:
    """ " (through its link 'a' -> '..')": the first of the archive's links that the target passes, if any."""
    parts, done = [p for p in posixpath.join(folder, link).split("/") if p not in ("", ".")], []
    for part in parts:
        if part == "..":
            if done:
                done.pop()
            continue
        done.append(part)
        here = "/".join(done)
        if here in links:
            return f" through its link {here!r} -> {links[here]!r}"
    return ""


def _signature(archive_path: Path) -> dict:
    info = archive_path.stat()
    return {"size": info.st_size, "mtime": int(info.st_mtime)}


def is_extracted(archive_path: Path, dest: Path) -> bool:
    """Whether ``archive_path``, as it is now (size, modification time), was extracted into ``dest`` completely."""
    marker = Path(dest) / ".extracted" / f"{Path(archive_path).name}.json"
    try:
        return json.loads(marker.read_text()) == _signature(Path(archive_path))
    except (OSError, ValueError):
        return False


def extract(
    archive_path: Path, dest: Path, *, progress: bool = True, before_writing: Callable[[], None] | None = None
) -> Path:
    """Extract ``archive_path`` into ``dest`` after checking every member and the free space.

    A marker in ``dest/.extracted/`` records a finished extraction, so a rerun skips it; an interrupted
    one is redone. Nothing is extracted from an archive with an unsafe member. ``before_writing`` is called once
    the checks have passed, before the first file is written (not at all when the archive is already extracted).
    """
    archive_path, dest = Path(archive_path), Path(dest)
    if is_extracted(archive_path, dest):
        return dest
    marker, signature = dest / ".extracted" / f"{archive_path.name}.json", _signature(archive_path)
    members = _members(archive_path)
    _check_members(archive_path, members)
    need = sum(m.size for m in members)
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise ReinError(
            f"extracting {archive_path.name} needs {need / 1e9:.1f} GB but {dest} has {free / 1e9:.1f} GB free"
        )
    if before_writing is not None:
        before_writing()
    bar = Progress(need, f"extracting {archive_path.name}", unit="B", unit_scale=True, bar=progress)
    try:
        if archive_path.name.lower().endswith(".zip") or archive_path.suffix.lower().startswith(".z"):
            with _open_zip(archive_path) as z:
                for info in z.infolist():
                    target = dest / posixpath.normpath(info.filename.replace("\\", "/"))
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    bar.update(info.file_size)
        else:
            with tarfile.open(archive_path) as t:
                for member in t:
                    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                        continue
                    t.extract(member, dest, filter="data")
                    bar.update(member.size)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise ReinError(
                f"cannot extract {archive_path.name} into {dest}: the disk or the file-size limit is full "
                f"({err.strerror}; it needs {need / 1e9:.1f} GB in all); free space there (`df -h`; `ulimit -f` "
                "shows the file-size limit), then rerun: finished archives are not extracted again"
            ) from err
        if err.errno is None:  # a decoding error, not the file system
            raise ReinError(
                f"extracting {archive_path} failed ({err}); the archive may be truncated: download it again"
            ) from err
        raise ReinError(
            f"extracting {archive_path} failed: {err.strerror} ({err.filename or dest}); check {dest}"
        ) from err
    except _FILTER_ERRORS as err:  # what the checks above did not foresee, refused by tarfile's own "data" filter
        member = getattr(err, "tarinfo", None)
        name = (
            f" {member.name!r}" + (f" -> {member.linkname!r}" if member and member.linkname else "") if member else ""
        )
        raise ReinError(
            f"archive {archive_path}: extraction refused its member{name} ({err}); what was extracted before it is in "
            f"{dest}: delete it, then download the archive again from the dataset's site, or extract it yourself, "
            "check it, and give the folder to --from"
        ) from err
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError, zlib.error) as err:
        raise ReinError(
            f"extracting {archive_path} failed ({err}); the archive may be truncated: download it again"
        ) from err
    finally:
        cut = sys.exc_info()[0]  # an error or Ctrl-C: the line says so, not "done"
        bar.close("done" if cut is None else "interrupted" if issubclass(cut, KeyboardInterrupt) else "failed")
    write_json(marker, signature)
    return dest


def archive_entry(path: Path, checksum: bool, *, progress: bool = True) -> dict:
    """Name, size and (optionally) MD5 of a source archive, for the manifest."""
    entry = {"name": path.name, "bytes": path.stat().st_size}
    if checksum:
        entry["md5"] = md5sum(path, progress=progress)
    return entry
