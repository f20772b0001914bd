"""A Hugging Face Hub on 127.0.0.1 for tests: repos of files at commits, answered in the Hub's file-resolution
protocol (``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag``), plus plain files
(release downloads) from `FakeServer`."""

from __future__ import annotations

import hashlib
import re

from .fake_server import FakeServer, Reply

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>[^?]+)")


class FakeHub(FakeServer):
    """`add_file` puts a file into a repo at a commit; ``main`` points at the commit added last (or `set_main`)."""

    def __init__(self) -> None:
        super().__init__()
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> file -> bytes
        self.main: dict[str, str] = {}
        self.denied: dict[str, int] = {}  # repo -> status (401, 403) for every request

    def add_file(self, repo: str, name: str, data: bytes, commit: str = "a" * 40) -> str:
        self.repos.setdefault(repo, {}).setdefault(commit, {})[name] = data
        self.main[repo] = commit
        return commit

    def respond(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        match = RESOLVE.match(path)
        if match is None:
            return super().respond(method, path, headers)
        repo, revision, name = match["repo"], match["revision"], match["file"]
        if repo in self.denied:
            return Reply(self.denied[repo], {"X-Error-Code": "GatedRepo"}, b"denied")
        commit = self.main.get(repo) if revision == "main" else revision
        files = self.repos.get(repo, {}).get(commit)
        if files is None:
            return Reply(404, {"X-Error-Code": "RepoNotFound" if repo not in self.repos else "RevisionNotFound"})
        if name not in files:
            return Reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        data = files[name]
        etag = hashlib.sha256(data).hexdigest()
        return Reply(200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}, data)
