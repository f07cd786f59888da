"""A small HTTP/1.1 client for llmctl's probes of local servers, on plain sockets.

Probes are on every start's path: each unit's readiness gate (`python -m llmctl wait-ready`)
runs one, and `up`, `switch` and `status` run several. httpx costs ~70 ms to import here (it
pulls in its command-line module, click and pygments among them) and ~25 ms to build a
client; the standard library's `http.client` ~20 ms (it imports `ssl` and the `email`
parser), a tenth of a `status`. Probes need none of that: they speak plain HTTP to addresses
from the config (no TLS, no proxies, no redirects, no streaming), so this client writes the
request itself and reads the answer with `_read_response` (a status line, headers, and a body
framed by Content-Length, chunks or the end of the connection), with keep-alive, a timeout
per request, JSON bodies, and the backends' API keys (`KeyRing`: `Authorization: Bearer`,
read again after a 401).

Adapters accept anything shaped like it (`HttpClient`): tests may hand in an httpx client with
a mock transport. The supervisor probes through it too, without keep-alive (`keep_alive=False`).
"""

from __future__ import annotations

import json as jsonlib
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

Origin = tuple[str, str, int]
RELOAD_INTERVAL = 1.0  # a server that keeps answering 401 does not make every request read files
MAX_LINE = 64 * 1024  # a status or header line (http.client's limit too)
MAX_HEADERS = 100


class HttpError(Exception):
    """The request got no HTTP answer (refused, reset, timed out, malformed)."""


class ConnectFailed(HttpError):
    pass


class TimedOut(HttpError):
    pass


class RemoteDisconnected(ConnectionError):
    """The server closed the connection before answering whole (a kept-alive one it timed
    out): named as http.client names it, since its name is in probe details."""


class MalformedAnswer(Exception):
    """An answer that is not HTTP/1.x as this client reads it."""


class SentRequest(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def request(self) -> SentRequest: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What adapters need of a client: httpx.Client and LoopbackClient both fit."""

    def get(self, url: str) -> HttpResponse: ...

    def post(self, url: str, *, json: Any = None, timeout: Any = ...) -> HttpResponse: ...

    def request(self, method: str, url: str, *, params: Any = None) -> HttpResponse: ...


class ProbeHttp(HttpClient, Protocol):
    """What the supervisor's probes need besides: a request with its own timeout (a liveness
    probe gets a few seconds, a deep probe tens). LoopbackClient and httpx.Client both fit."""

    def request(
        self, method: str, url: str, *, params: Any = None, json: Any = None, timeout: Any = None
    ) -> HttpResponse: ...


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]  # as sent, names in lower case


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes
    request: Request
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)  # ValueError (JSONDecodeError) when it is not JSON


def origin(url: str) -> Origin:
    """Scheme, host and port: what makes two URLs the same server."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class KeyRing:
    """Bearer keys by server: given ({base URL: key}), or loaded on first use by `load` and
    again (at most once a second) when a server answers 401 (its unit restarted with a new key)."""

    def __init__(
        self, keys: Mapping[str, str] | None = None, *, load: Callable[[], Mapping[str, str]] | None = None
    ) -> None:
        self._load = load
        self._keys: dict[Origin, str] | None = None if keys is None else self._index(keys)
        self._loaded_at = float("-inf")
        # status probes every unit at once: one thread reads the key files, the others wait.
        self._loading = threading.Lock()

    @staticmethod
    def _index(keys: Mapping[str, str]) -> dict[Origin, str]:
        return {origin(url): key for url, key in keys.items() if key}

    @property
    def reloads(self) -> bool:
        return self._load is not None

    def key(self, url: str, *, reload: bool = False) -> str | None:
        if self._load is not None:
            with self._loading:
                now = time.monotonic()
                stale = reload and now - self._loaded_at >= RELOAD_INTERVAL
                if self._keys is None or stale:
                    self._keys = self._index(self._load())
                    self._loaded_at = now
        return (self._keys or {}).get(origin(url))


class LoopbackClient:
    """Plain-HTTP client with one kept-alive connection per server. Threads may share it
    (`status` probes every unit at once): requests to one server take turns on its connection."""

    def __init__(self, timeout: float, *, keys: KeyRing | None = None, keep_alive: bool = True) -> None:
        self.timeout = timeout
        self.keys = keys
        # The supervisor probes every few seconds for ever: a kept-alive idle connection would
        # hold one of llama-server's fixed HTTP threads between its probes.
        self.keep_alive = keep_alive
        self._connections: dict[Origin, _Connection] = {}
        self._turns: dict[Origin, threading.Lock] = {}
        self._guard = threading.Lock()  # for the two dicts

    def __enter__(self) -> LoopbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._guard:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.close()

    def get(
        self, url: str, *, params: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Response:
        return self.request("GET", url, params=params, timeout=timeout)

    def post(
        self,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response:
        return self.request("POST", url, json=json, params=params, timeout=timeout)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> Response:
        headers = {"Accept": "application/json", "User-Agent": "llmctl"}
        if not self.keep_alive:
            headers["Connection"] = "close"
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        key = self.keys.key(url) if self.keys is not None else None
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        response = self._send(method, url, body, headers, timeout)
        if response.status_code == 401 and self.keys is not None and self.keys.reloads:
            fresh = self.keys.key(url, reload=True)
            if fresh is not None and fresh != key:
                headers["Authorization"] = f"Bearer {fresh}"
                response = self._send(method, url, body, headers, timeout)
        return response

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float | None
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise HttpError(f"{url}: llmctl probes speak plain http only")
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        where = origin(url)
        with self._guard:
            turn = self._turns.setdefault(where, threading.Lock())
        with turn:
            return self._exchange(where, method, target, body, headers, timeout, url)

    def _exchange(
        self,
        where: Origin,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
        url: str,
    ) -> Response:
        wire = _request_bytes(method, target, where, body, headers)
        for attempt in (1, 2):
            reused = where in self._connections
            try:
                connection = self._connection(where, timeout)
                connection.sock.sendall(wire)
                status, answer_headers, content, will_close = _read_response(connection.reader, method)
            except TimeoutError:
                self._drop(where)
                raise TimedOut("timed out") from None
            except (RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(where)
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection: one fresh try
                raise HttpError(f"{type(exc).__name__}: {exc}") from None
            except ConnectionRefusedError:
                self._drop(where)
                raise ConnectFailed("connection refused") from None
            except (OSError, MalformedAnswer) as exc:
                self._drop(where)
                raise HttpError(f"{type(exc).__name__}: {exc}") from None
            if will_close or not self.keep_alive:
                self._drop(where)
            sent = Request(method, url, {k.lower(): v for k, v in headers.items()})
            return Response(status, content, sent, answer_headers)
        raise AssertionError("unreachable")

    def _connection(self, where: Origin, timeout: float | None) -> _Connection:
        wait = self.timeout if timeout is None else timeout
        with self._guard:
            connection = self._connections.get(where)
        if connection is None:
            # Connecting outside the guard: another thread's probe of another server goes on.
            connection = _Connection(where[1], where[2], wait)
            with self._guard:
                self._connections[where] = connection
        connection.sock.settimeout(wait)
        return connection

    def _drop(self, where: Origin) -> None:
        with self._guard:
            connection = self._connections.pop(where, None)
        if connection is not None:
            connection.close()


class _Connection:
    """One socket to one server and the buffered reader of its answers."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _request_bytes(
    method: str, target: str, where: Origin, body: bytes | None, headers: Mapping[str, str]
) -> bytes:
    host = f"[{where[1]}]" if ":" in where[1] else where[1]
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{where[2]}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _line(reader: Any) -> bytes:
    line: bytes = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise MalformedAnswer("line too long")
    return line


def _read_head(reader: Any) -> tuple[str, int, dict[str, str]]:
    """The answer's HTTP version, status and headers (names in lower case), past any interim
    (1xx) answer such as 100 Continue."""
    while True:
        status_line = _line(reader)
        if not status_line:
            raise RemoteDisconnected("Remote end closed connection without response")
        version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise MalformedAnswer(f"bad status line {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = _line(reader)
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise MalformedAnswer(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()  # a repeated header: the last one counts
        else:
            raise MalformedAnswer(f"more than {MAX_HEADERS} headers")
        if not 100 <= int(code) < 200 or code == "101":
            return version, int(code), headers


def _read_response(reader: Any, method: str) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, whether the server closes the connection after it)."""
    version, status, headers = _read_head(reader)
    connection = headers.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", will_close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, _read_chunked(reader), will_close
    length = headers.get("content-length")
    if length is None:
        return status, headers, reader.read(), True  # framed by the end of the connection
    if not length.strip().isdigit():
        raise MalformedAnswer(f"bad Content-Length {length!r}")
    content: bytes = reader.read(int(length))
    if len(content) < int(length):
        raise MalformedAnswer(f"the answer ended after {len(content)} of {length} bytes")
    return status, headers, content, will_close


def _read_chunked(reader: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise MalformedAnswer(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise MalformedAnswer("the answer ended inside a chunk")
        parts.append(chunk)
        _line(reader)  # the CRLF after the chunk


def transport_errors() -> tuple[type[Exception], ...]:
    """The exceptions a request can raise for "no answer": ours, and httpx's when a caller
    handed in an httpx client (then httpx is imported already; never imported here)."""
    import sys  # noqa: PLC0415

    httpx = sys.modules.get("httpx")
    return (HttpError, httpx.HTTPError) if httpx is not None else (HttpError,)


def short_error(exc: Exception) -> str:
    """'connection refused', 'timed out', or the error's type and text."""
    import sys  # noqa: PLC0415

    if isinstance(exc, ConnectFailed):
        return "connection refused"
    if isinstance(exc, TimedOut):
        return "timed out"
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, HttpError):
        return str(exc)
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")
