"""A file server on 127.0.0.1 for download tests: files in memory, HEAD and GET, Range requests, injected faults.

    with FakeServer() as server:
        url = server.add("/releases/model.pth", data, cut_after=1000)  # the first answers stop after 1000 bytes
        ...
        server.set("/releases/model.pth", cut_after=None)  # the next ones are whole
        assert server.requests[-1].range == "bytes=1000-"

Slow servers: ``delay`` (seconds before anything is sent: one that never answers), ``trickle_head`` and ``trickle``
(every byte of the status line and headers, or of the body, sent alone after that many seconds), ``pause_after`` and
``pause`` (a pause in the middle of the body, e.g. to start a second download meanwhile).

Another protocol (the Hugging Face Hub's ``/{repo}/resolve/{revision}/{file}``, a login) is a subclass that
overrides `FakeServer.respond`; `File.headers` adds response headers (``ETag``, ``X-Repo-Commit``) per file.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class File:
    """One served file and the faults injected into every answer for it (change them with `FakeServer.set`)."""

    data: bytes
    status: int | None = None  # answer this status (401, 403, 404, 500, ...) instead of the file
    cut_after: int | None = None  # close the connection after this many bytes of the body (an interrupted download)
    serve: bytes | None = None  # serve these bytes instead of ``data`` (a corrupted file)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (they replace computed ones)
    no_length: bool = False  # send no Content-Length: the body ends when the connection closes
    trickle_head: float = 0.0  # send the status line and headers one byte at a time, this many seconds apart
    trickle: float = 0.0  # send the body one byte at a time, this many seconds apart
    pause_after: int | None = None  # wait ``pause`` seconds after this many bytes of the body
    pause: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as the server got it; ``headers`` has lower-case names."""

    method: str
    path: str
    range: str | None
    headers: dict[str, str]


@dataclass
class Reply:
    """What to answer: status, headers (Content-Length is added from the body), body, and where to cut it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None
    no_length: bool = False
    trickle_head: float = 0.0
    trickle: float = 0.0
    pause_after: int | None = None
    pause: float = 0.0


class FakeServer:
    """Serves `files` (``path -> File``, the path with its query string) on 127.0.0.1 at a free port, in a thread,
    while used as a context manager; every request is appended to `requests`."""

    def __init__(self) -> None:
        self.files: dict[str, File] = {}
        self.requests: list[Request] = []
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        serve = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake server", daemon=True)
        serve.start()  # polling every 50 ms: a test waits at most that long for the server to stop
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, path: str, data: bytes, **faults: object) -> str:
        """Serve ``data`` at ``path`` (starting with ``/``) with the given `File` faults; returns its URL."""
        self.files[path] = File(data, **faults)
        return self.url + path

    def set(self, path: str, **faults: object) -> None:
        """Change the faults of a served file, e.g. ``set(path, cut_after=None)``."""
        known = {f.name for f in fields(File)}
        for name, value in faults.items():
            if name not in known:
                raise TypeError(f"File has no field {name!r}")
            setattr(self.files[path], name, value)

    def respond(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        """The answer to one request (``headers`` with lower-case names); override it to speak another protocol."""
        file = self.files.get(path)
        if file is None:
            return Reply(404, body=b"not found")
        time.sleep(file.delay)
        if file.status is not None:
            return Reply(file.status, dict(file.headers), f"HTTP {file.status}".encode())
        body = file.data if file.serve is None else file.serve
        slow = {name: getattr(file, name) for name in ("no_length", "trickle_head", "trickle", "pause_after", "pause")}
        wanted = headers.get("range")
        if wanted is None or file.ignore_range:
            return Reply(200, {"Accept-Ranges": "bytes", **file.headers}, body, file.cut_after, **slow)
        start, end = _byte_range(wanted, len(body))
        if start >= len(body):
            return Reply(416, {"Content-Range": f"bytes */{len(body)}", **file.headers})
        ranged = {"Content-Range": f"bytes {start}-{end}/{len(body)}", **file.headers}
        return Reply(206, ranged, body[start : end + 1], file.cut_after, **slow)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _byte_range(header: str, length: int) -> tuple[int, int]:
    """``bytes=N-`` / ``bytes=N-M`` / ``bytes=-K`` as the first and last byte (inclusive)."""
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first:  # the last K bytes
        return max(length - int(last), 0), length - 1
    return int(first), min(int(last), length - 1) if last else length - 1


class _Server(ThreadingHTTPServer):
    owner: FakeServer

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no error here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        owner.requests.append(Request(self.command, self.path, headers.get("range"), headers))
        reply = owner.respond(self.command, self.path, headers)
        length = {} if reply.no_length else {"Content-Length": str(len(reply.body))}
        data = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        self.close_connection = True
        if not reply.trickle and not reply.trickle_head and reply.pause_after is None:
            self.send_response(reply.status)
            for name, value in {**length, **reply.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        lines = [f"{self.protocol_version} {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in {**length, **reply.headers}.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._send(head, reply.trickle_head)
        if body:
            cut = len(data) if reply.pause_after is None else reply.pause_after
            self._send(data[:cut], reply.trickle)
            time.sleep(reply.pause)
            self._send(data[cut:], reply.trickle)

    def _send(self, data: bytes, trickle: float) -> None:
        """``data`` at once, or a byte at a time ``trickle`` seconds apart (until the client hangs up)."""
        if not trickle:
            self.wfile.write(data)
            return
        for k in range(len(data)):
            time.sleep(trickle)
            self.wfile.write(data[k : k + 1])
            self.wfile.flush()
