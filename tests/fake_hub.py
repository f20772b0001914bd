"""A Hugging Face Hub on 127.0.0.1 for tests: repos of files at commits, answered in the Hub's file-resolution
protocol (``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag``), uploads as
huggingface_hub sends them (``POST /api/repos/create``, ``.../preupload/{rev}``, ``.../commit/{rev}``), plus plain
files (release downloads) from `FakeServer`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading

from .fake_server import FakeServer, Reply, Request, _Handler, _Server

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>[^?]+)")
LISTING = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<call>revision|tree)/(?P<revision>[^/?]+)")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<call>preupload|commit)/(?P<revision>[^/?]+)")


class FakeHub(FakeServer):
    """`add_file` puts a file into a repo at a commit; ``main`` points at the commit added last (or `set_main`)."""

    def __init__(self) -> None:
        super().__init__()
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> file -> bytes
        self.main: dict[str, str] = {}
        self.denied: dict[str, int] = {}  # repo -> status (401, 403) for every request
        self.push_status: dict[str, int] = {}  # organisation -> status every upload call for its repos answers
        self.token: str | None = None  # when set, uploads need ``Authorization: Bearer <token>`` (else 401)

    def __enter__(self) -> FakeHub:
        self._httpd = _Server(("127.0.0.1", 0), _HubHandler)
        self._httpd.owner = self
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake hub", daemon=True).start()
        return self

    def add_file(self, repo: str, name: str, data: bytes, commit: str = "a" * 40) -> str:
        self.repos.setdefault(repo, {}).setdefault(commit, {})[name] = data
        self.main[repo] = commit
        return commit

    def respond(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        listing = LISTING.match(path)
        if listing is not None:
            return self.listing(listing["repo"], listing["call"], listing["revision"])
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

    def listing(self, repo: str, call: str, revision: str) -> Reply:
        """A repo's files at a revision, as `snapshot_download` (``hf download REPO FILE FILE``) asks for them."""
        commit = self.main.get(repo) if revision == "main" else revision
        files = self.repos.get(repo, {}).get(commit)
        if files is None:
            return Reply(404, {"X-Error-Code": "RepoNotFound" if repo not in self.repos else "RevisionNotFound"})
        if call == "revision":
            return _json({"id": repo, "sha": commit, "siblings": [{"rfilename": name} for name in files]})
        entries = [
            {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()} for n, d in files.items()
        ]
        return _json(entries)

    def respond_post(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """The Hub's upload calls: create a repo, say every file uploads inline, commit (the files become a new
        commit of the repo, served like any other)."""
        if path == "/api/validate-yaml":  # the model card's metadata, checked before an upload
            return _json({"errors": [], "warnings": []})
        data = json.loads(body.decode().splitlines()[0]) if path == "/api/repos/create" else None
        match = API.match(path)
        repo = f"{data['organization']}/{data['name']}" if data else match["repo"] if match else None
        if repo is None:
            return Reply(404, body=b"not found")
        if repo.split("/")[0] in self.push_status:
            status = self.push_status[repo.split("/")[0]]
            return Reply(status, {"Content-Type": "application/json"}, json.dumps({"error": f"HTTP {status}"}).encode())
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"{}")
        if data is not None:
            return _json({"url": f"{self.url}/{repo}"})
        if match["call"] == "preupload":
            files = json.loads(body)["files"]
            return _json(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        commit = hashlib.sha1(body).hexdigest()
        for line in body.decode().splitlines():
            entry = json.loads(line)
            if entry["key"] == "file":
                self.add_file(repo, entry["value"]["path"], base64.b64decode(entry["value"]["content"]), commit)
        return _json({"commitUrl": f"{self.url}/{repo}/commit/{commit}", "commitOid": commit, "pullRequestUrl": None})


def _json(value: object) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(value).encode())


class _HubHandler(_Handler):
    """`FakeServer`'s handler, plus the POST requests of uploads (answered by `FakeHub.respond_post`)."""

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        owner.requests.append(Request(self.command, self.path, None, headers))
        reply = owner.respond_post(self.path, headers, body)
        self.send_response(reply.status)
        for name, value in {"Content-Length": str(len(reply.body)), **reply.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        self.close_connection = True
