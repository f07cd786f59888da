"""The stdlib probe client against a real local HTTP server (real sockets, real keep-alive)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llmctl.backends.http import ConnectFailed, HttpError, KeyRing, LoopbackClient, TimedOut, short_error


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as llama-server and uvicorn do

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any, *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
            self.wfile.write(data)

    def do_GET(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        server.seen.append((self.command, self.path, dict(self.headers), self.client_address[1], b""))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/guarded" and self.headers.get("Authorization") != f"Bearer {server.key}":
            self._answer(401, {"error": "Unauthorized"})
            return
        self._answer(200, {"path": self.path}, close=self.path == "/close")

    def do_POST(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server.seen.append((self.command, self.path, dict(self.headers), self.client_address[1], body))
        self._answer(200, {"echo": json.loads(body)})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str, dict[str, str], int, bytes]] = []
        self.key = "sk-1"
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_get_and_post_json_over_one_kept_alive_connection(server: Server) -> None:
    with LoopbackClient(5.0) as client:
        first = client.get(f"{server.url}/health")
        second = client.post(f"{server.url}/v1/chat/completions", json={"max_tokens": 1}, params={"x": "a b"})
    assert (first.status_code, first.json()) == (200, {"path": "/health"})
    assert second.json() == {"echo": {"max_tokens": 1}}
    (_, _, _, port1, _), (method, path, headers, port2, body) = server.seen
    assert port1 == port2, "the second request reused the connection"
    assert (method, path, headers["Content-Type"], body) == (
        "POST", "/v1/chat/completions?x=a+b", "application/json", b'{"max_tokens": 1}',
    )  # fmt: skip


def test_a_connection_the_server_closed_is_replaced_transparently(server: Server) -> None:
    with LoopbackClient(5.0) as client:
        assert client.get(f"{server.url}/close").status_code == 200  # answered with Connection: close
        assert client.get(f"{server.url}/health").status_code == 200
        server.shutdown()  # every kept-alive connection dies with the old server thread...
        srv2_thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        srv2_thread.start()
        # ...a stale socket may still be in the pool: the client retries once on a fresh one.
        assert client.get(f"{server.url}/health").status_code == 200


def test_refused_and_timed_out_are_told_apart() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with LoopbackClient(1.0) as client, pytest.raises(ConnectFailed) as refused:
            client.get(f"http://127.0.0.1:{port}/health")
    assert short_error(refused.value) == "connection refused"


def test_a_slow_answer_times_out_at_the_request_timeout(server: Server) -> None:
    with LoopbackClient(5.0) as client:
        start = time.monotonic()
        with pytest.raises(TimedOut) as caught:
            client.get(f"{server.url}/slow", timeout=0.2)
        assert time.monotonic() - start < 0.9
        assert short_error(caught.value) == "timed out"
        assert client.get(f"{server.url}/health").status_code == 200  # the client is still usable


def test_only_plain_http() -> None:
    with LoopbackClient(1.0) as client, pytest.raises(HttpError, match="plain http only"):
        client.get("https://127.0.0.1:1/")


def test_the_key_goes_only_to_its_server_and_a_401_rereads_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.backends import http  # noqa: PLC0415

    monkeypatch.setattr(http, "RELOAD_INTERVAL", 0.0)
    current = {"key": "sk-old"}
    loads = []

    def load() -> dict[str, str]:
        loads.append(1)
        return {server.url: current["key"], "http://127.0.0.1:1": "sk-other"}

    with LoopbackClient(5.0, keys=KeyRing(load=load)) as client:
        assert client.get(f"{server.url}/guarded").status_code == 401  # the file still says sk-old
        current["key"] = "sk-1"  # `up` wrote the new key and restarted the server
        response = client.get(f"{server.url}/guarded")
    assert response.status_code == 200
    assert response.request.headers["authorization"] == "Bearer sk-1"
    sent = [h.get("Authorization") for _, path, h, _, _ in server.seen]
    # 401 -> reread, same key: no retry. 401 -> reread, new key: one retry with it.
    assert sent == ["Bearer sk-old", "Bearer sk-old", "Bearer sk-1"]
    assert len(loads) == 3  # first use, and after each 401


def test_no_key_no_header(server: Server) -> None:
    with LoopbackClient(5.0, keys=KeyRing({"http://127.0.0.1:1": "sk-other"})) as client:
        response = client.get(f"{server.url}/health")
    assert "authorization" not in response.request.headers
    assert "Authorization" not in server.seen[0][2]


def test_threads_may_share_one_client(server: Server) -> None:
    """status probes every unit at once through one client: answers must not cross."""
    other = Server()
    thread = threading.Thread(target=other.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        with LoopbackClient(5.0) as client:

            def ask(i: int) -> tuple[str, Any]:
                base = server.url if i % 2 else other.url
                return f"/p{i}", client.get(f"{base}/p{i}").json()["path"]

            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(ask, range(200)))
        assert all(sent == answered for sent, answered in results)
    finally:
        other.shutdown()
        other.server_close()


@contextlib.contextmanager
def canned(*answers: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads one request per connection and writes the next canned answer, then
    closes: the framings and failures a real server may send, byte for byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        for answer in answers:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                requests.append(data)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.close()
        thread.join(timeout=5)


def test_chunked_eof_framed_interim_and_http10_answers_are_read_whole() -> None:
    answers = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n6\r\n: [1]}\r\n0\r\nTrailer: x\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"framed": "by EOF"}',
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 204 No Content\r\n\r\n",
    )
    with canned(*answers) as (url, requests), LoopbackClient(5.0) as client:
        chunked = client.get(f"{url}/a")
        eof = client.get(f"{url}/b")
        interim = client.post(f"{url}/c", json={"x": 1})
        empty = client.get(f"{url}/d")
    assert (chunked.status_code, chunked.json(), chunked.headers["x-a"]) == (200, {"a": [1]}, "1")
    assert eof.json() == {"framed": "by EOF"}
    assert (interim.status_code, interim.json()) == (503, {})
    assert (empty.status_code, empty.content) == (204, b"")
    head = requests[2].partition(b"\r\n\r\n")[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /c HTTP/1.1"
    assert f"Host: {url.removeprefix('http://')}" in lines and "Content-Length: 8" in lines


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "closed connection without response"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "ended after 2 of 10 bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
def test_what_is_not_a_whole_answer_is_an_error(answer: bytes, error: str) -> None:
    with canned(answer) as (url, _), LoopbackClient(5.0) as client, pytest.raises(HttpError, match=error):
        client.get(f"{url}/health")
