"""HTTP requests bounded in time: a connect timeout, a read timeout that also bounds the wait for a whole answer
(headers trickled byte by byte included), and the one wording of HTTP and network errors."""

from __future__ import annotations

import contextlib
import functools
import http.client
import math
import os
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, replace

from rein_cli.errors import ReinError

# Settable for slow links or impatient tests; docs/hub.md ("Timeouts") documents them.
LIMIT_VARIABLES = {"connect": "REIN_CONNECT_TIMEOUT", "read": "REIN_READ_TIMEOUT", "min_rate": "REIN_MIN_RATE"}


@dataclass(frozen=True)
class Limits:
    """How long a download may wait. ``connect``: seconds to open a connection. ``read``: seconds for the whole
    answer to a request (status line and headers) and for any data after it. ``min_rate``: the least average speed,
    bytes per second, over every ``read`` seconds of a body (0: no minimum), so a trickle cannot hold a download
    forever. A server that accepts the connection and never answers, or trickles, is given up within
    ``connect + 3 * read`` seconds at most (55 s with the defaults)."""

    connect: float = 10.0
    read: float = 15.0
    min_rate: float = 1000.0

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, each replaced by its environment variable (`LIMIT_VARIABLES`) when that is set."""
        values = {}
        for field, variable in LIMIT_VARIABLES.items():
            text = os.environ.get(variable, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not math.isfinite(value) or value < 0 or (field != "min_rate" and value == 0):
                unit = "bytes per second, 0 for no minimum" if field == "min_rate" else "seconds, more than 0"
                raise ReinError(f"{variable}={text!r} is not a number of {unit}; set it to one, or unset it")
            values[field] = value
        return cls(**values)

    def shorter(self, seconds: float) -> Limits:
        """These limits with the timeouts cut to at most ``seconds`` (for a request that only informs)."""
        return replace(self, connect=min(self.connect, seconds), read=min(self.read, seconds))


def open_url(
    request: urllib.request.Request, opener: urllib.request.OpenerDirector | None, limits: Limits
) -> http.client.HTTPResponse:
    """The answer to ``request`` within ``limits`` (redirects followed). A given ``opener`` (e.g. one carrying a
    login) uses its own handlers: its connection and answer are bounded by ``limits.read`` per socket wait only."""
    if opener is not None:
        return opener.open(request, timeout=limits.read)
    bounded = urllib.request.build_opener(_HTTPHandler(limits), _HTTPSHandler(limits))
    return bounded.open(request, timeout=limits.read)


def http_error(url: str, err: urllib.error.HTTPError) -> ReinError:
    """One line for an HTTP error status: what it means and what to do."""
    if err.code in (401, 403):
        return ReinError(
            f"access denied to {url} (HTTP {err.code}): the file may be private or need a login; check the address "
            "and your access"
        )
    if err.code == 404:
        return ReinError(f"not found: {url} (HTTP 404); check the file name, and the server or mirror address")
    then = "the server may be busy, rerun later to resume" if err.code >= 500 else "check the address"
    return ReinError(f"downloading {url} failed: HTTP {err.code} {err.reason}; {then}")


def reason(err: BaseException, limits: Limits) -> str:
    """Why a request or a read failed, in a few words (``no answer within 15 s``, ``connection refused``)."""
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(cause, _Connecting):
        return f"no connection within {limits.connect:g} s"
    if isinstance(cause, TimeoutError):
        return f"no answer within {limits.read:g} s"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(cause) or type(cause).__name__


class _Connecting(TimeoutError):
    """The connection itself was not made in time."""


class _Bounded:
    """A connection with a connect timeout, a read timeout per socket wait, and a watchdog that shuts the socket
    when the whole answer (status line and headers) has not arrived ``read`` seconds after the request."""

    limits: Limits

    def connect(self) -> None:
        self.timeout = self.limits.connect
        try:
            super().connect()
        except TimeoutError as err:
            raise _Connecting(f"no connection within {self.limits.connect:g} s") from err
        self.sock.settimeout(self.limits.read)

    def getresponse(self) -> http.client.HTTPResponse:
        state = {"answered": False, "stalled": False}
        lock = threading.Lock()

        def stall() -> None:
            with lock:
                if state["answered"]:
                    return
                state["stalled"] = True
            with contextlib.suppress(OSError, AttributeError, TypeError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # the plain socket's: under TLS too

        watchdog = threading.Timer(self.limits.read, stall)
        watchdog.daemon = True
        watchdog.start()
        try:
            response = super().getresponse()
        except (OSError, http.client.HTTPException) as err:
            if state["stalled"]:
                raise TimeoutError(f"no complete answer within {self.limits.read:g} s") from err
            raise
        finally:
            with lock:
                state["answered"] = True
            watchdog.cancel()
        return response


class _HTTPConnection(_Bounded, http.client.HTTPConnection):
    def __init__(self, *args, limits: Limits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits


class _HTTPSConnection(_Bounded, http.client.HTTPSConnection):
    def __init__(self, *args, limits: Limits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, limits=self.limits), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPSConnection, limits=self.limits), req, context=self._context)
