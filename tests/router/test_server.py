"""The router's forwarding, against a small HTTP backend and a real HTTP client (httpx)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmctl.router import model_path, split_target
from llmctl.router.metrics import RouterMetrics
from llmctl.router.scheduler import LoadOutcome, ModelPolicy, Scheduler
from llmctl.router.server import Router, run
from llmctl.router.watch import UnitWatch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Backend:
    """Answers /v1/models (Content-Length) and streams /v1/chat/completions (chunked),
    saying which model it has loaded; records what it received."""

    port: int
    model: str = "alpha"
    chunks: int = 3
    release: asyncio.Event = field(default_factory=asyncio.Event)  # the stream's last chunks wait for it
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)  # path, host, body
    authorizations: list[str | None] = field(default_factory=list)  # each request's, if any
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        path = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        self.seen.append((path, headers.get("Host", ""), body))
        self.authorizations.append(
            next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        )
        if path == "/v1/models":
            data = json.dumps({"data": [{"id": self.model}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for i in range(self.chunks):
                if i == 1:
                    await writer.drain()
                    await self.release.wait()
                chunk = f"data: {json.dumps({'model': self.model, 'i': i})}\n\n".encode()
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            done = b"data: [DONE]\n\n"
            writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()


@dataclass
class Loader:
    backend: Backend
    calls: list[str] = field(default_factory=list)

    async def victims(self, backend: str, model: str) -> list[str]:
        return []

    async def load(
        self, backend: str, model: str, *, evict: Sequence[str], restore: str | None
    ) -> LoadOutcome:
        self.calls.append(model)
        self.backend.model = model
        return LoadOutcome(loaded=model, seconds=0.0)

    async def unload(self, backend: str) -> None:
        self.calls.append("unload")


@asynccontextmanager
async def running(
    backend: Backend, *, start_backend: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, Router]]:
    if start_backend:
        await backend.start()
    policies = {m: ModelPolicy(m, "native", load_timeout=5) for m in ("alpha", "beta", "org/model:7b")}
    scheduler = Scheduler(policies, set(), Loader(backend))
    scheduler.set_loaded("native", "alpha")
    router = Router(scheduler, {"native": ("127.0.0.1", backend.port)}, RouterMetrics())
    server = await asyncio.start_server(router.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, router
    finally:
        server.close()
        if backend.server is not None:
            await backend.stop()


def test_model_paths_round_trip_ids_with_slashes_and_colons() -> None:
    assert model_path("org/model:7b") == "/m/org%2Fmodel%3A7b"
    assert split_target(model_path("org/model:7b") + "/v1/chat/completions") == (
        "org/model:7b",
        "/v1/chat/completions",
    )
    assert split_target("/v1/models") is None


def test_forwards_to_the_backend_path_with_its_host_and_the_body() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        backend.release.set()
        async with running(backend) as (client, _):
            first = await client.get(f"{model_path('alpha')}/v1/models")
            second = await client.post(f"{model_path('alpha')}/v1/chat/completions", json={"x": 1})
            assert first.status_code == 200
            assert first.json() == {"data": [{"id": "alpha"}]}
            assert second.status_code == 200
            assert backend.seen[0][:2] == ("/v1/models", f"127.0.0.1:{backend.port}")
            assert json.loads(backend.seen[1][2]) == {"x": 1}

    asyncio.run(go())


def test_client_connection_is_kept_alive_across_requests() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend) as (client, router):
            for _ in range(3):
                assert (await client.get(f"{model_path('alpha')}/v1/models")).status_code == 200
            assert len(router.connections) == 1  # one client connection carried all three

    asyncio.run(go())


def test_a_stream_is_relayed_as_it_arrives() -> None:
    async def go() -> None:
        backend = Backend(free_port(), chunks=3)
        async with running(backend) as (client, _):
            async with client.stream(
                "POST", f"{model_path('alpha')}/v1/chat/completions", json={}
            ) as response:
                lines = response.aiter_lines()
                first = await anext(lines)
                # The backend holds the rest until we release it: the first chunk came alone.
                assert json.loads(first.removeprefix("data: "))["i"] == 0
                backend.release.set()
                rest = [line async for line in lines if line]
            assert rest[-1] == "data: [DONE]"
            assert len(rest) == 3

    asyncio.run(go())


def test_request_for_another_model_is_answered_by_that_model() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        backend.release.set()
        async with running(backend) as (client, router):
            response = await client.get(f"{model_path('beta')}/v1/models")
            assert response.json() == {"data": [{"id": "beta"}]}
            assert router.scheduler.slots["native"].loaded == "beta"

    asyncio.run(go())


def test_unknown_model_gets_503_in_openai_shape_and_unknown_path_404() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend) as (client, router):
            response = await client.post(f"{model_path('gpt-9')}/v1/chat/completions", json={})
            assert response.status_code == 503
            error = response.json()["error"]
            assert "gpt-9" in error["message"]
            assert error["code"] == "model_unavailable"
            assert (await client.get("/v1/models")).status_code == 404
            assert router.metrics.unavailable_total["gpt-9"] == 1

    asyncio.run(go())


def test_request_waits_for_a_backend_that_is_restarting() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend, start_backend=False) as (client, _):
            pending = asyncio.create_task(client.get(f"{model_path('alpha')}/v1/models"))
            await asyncio.sleep(0.3)  # refused meanwhile: nothing was sent, so it is tried again
            assert not pending.done()
            await backend.start()
            response = await pending
            assert response.status_code == 200

    asyncio.run(go())


def test_control_state_and_metrics() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend) as (client, _):
            await client.get(f"{model_path('alpha')}/v1/models")
            state = (await client.get("/_llmctl/state")).json()
            native = state["backends"]["native"]
            assert native["loaded"] == "alpha"
            assert native["available"] == ["alpha", "beta", "org/model:7b"]
            assert native["queue"] == 0
            metrics = (await client.get("/_llmctl/metrics")).text
            assert 'llmctl_router_requests_total{model="alpha"} 1' in metrics
            assert 'llmctl_router_model_loaded{backend="native",model="alpha"} 1' in metrics
            switched = await client.post("/_llmctl/switch", json={"model": "beta"})
            assert switched.json()["loaded"] == "beta"
            assert (await client.post("/_llmctl/switch", content=b"nope")).status_code == 400

    asyncio.run(go())


def test_a_switch_needs_the_routers_key_and_a_refused_one_changes_nothing(tmp_path: Path) -> None:
    key_file = tmp_path / "router.env"

    def key() -> str:
        from llmctl.secrets import read_router_key  # noqa: PLC0415

        return read_router_key(key_file)

    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend) as (client, router):
            router.key = key
            switch = {"model": "beta"}
            # No key file yet: nothing matches, not even an empty key.
            assert (await client.post("/_llmctl/switch", json=switch)).status_code == 401
            key_file.write_text("LLMCTL_ROUTER_KEY=right-key\n")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "right-key"}):
                refused = await client.post("/_llmctl/switch", json=switch, headers=headers)
                assert refused.status_code == 401 and "router's key" in refused.json()["error"], headers
            assert router.scheduler.slots["native"].loaded == "alpha"
            assert router.scheduler.loader.calls == []  # type: ignore[attr-defined]
            # Reading needs no key (status, Prometheus).
            assert (await client.get("/_llmctl/state")).status_code == 200
            ok = await client.post(
                "/_llmctl/switch", json=switch, headers={"Authorization": "Bearer right-key"}
            )
            assert ok.status_code == 200 and ok.json()["loaded"] == "beta"

    asyncio.run(go())


def test_a_model_request_needs_the_routers_key_which_the_backend_never_sees() -> None:
    async def go() -> None:
        backend = Backend(free_port())
        async with running(backend) as (client, router):
            router.key = lambda: "router-key"
            models = f"{model_path('alpha')}/v1/models"
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = await client.get(models, headers=headers)
                assert refused.status_code == 401, headers
                assert refused.json()["error"]["code"] == "invalid_api_key"
            assert backend.seen == []  # nothing reached it, nothing was loaded
            assert router.scheduler.loader.calls == []  # type: ignore[attr-defined]
            right = {"Authorization": "Bearer router-key"}
            assert (await client.get(models, headers=right)).status_code == 200
            router.backend_key = lambda name: "backend-key" if name == "native" else None
            assert (await client.get(models, headers=right)).status_code == 200
            # Unkeyed: no Authorization at all; keyed: the backend's own key, never the router's.
            assert backend.authorizations == [None, "Bearer backend-key"]

    asyncio.run(go())


def test_a_backend_changed_by_another_command_is_noticed_before_forwarding(tmp_path: Path) -> None:

    unit = tmp_path / "systemd/user/llmctl-native.service"
    unit.parent.mkdir(parents=True)

    def install(model: str, mtime: int) -> None:
        unit.write_text(
            "# Generated by llmctl (test)\n[Service]\nExecStartPost=/bin/python -m llmctl wait-ready "
            f"--kind llama-server --url http://127.0.0.1:1 --model {model}\n"
        )
        os.utime(unit, ns=(mtime, mtime))

    async def go() -> None:
        backend = Backend(free_port())
        backend.release.set()
        install("alpha", 1_000)
        async with running(backend) as (client, router):
            router.watch = UnitWatch(tmp_path)
            assert router.watch.model("native") == "alpha"
            assert (await client.get(f"{model_path('alpha')}/v1/models")).json()["data"][0]["id"] == "alpha"
            # `llmctl rollback` (say) put beta on the backend: the router must not send alpha there.
            backend.model = "beta"
            install("beta", 2_000)
            assert router.watch.changed("native")
            assert router.watch.model("native") == "beta"
            router.watch.seen["native"] = (1_000, "alpha")  # as before the change: the request notices it
            response = await client.get(f"{model_path('alpha')}/v1/models")
            assert response.json()["data"][0]["id"] == "alpha"  # loaded again first
            assert router.scheduler.loader.calls == ["alpha"]  # type: ignore[attr-defined]

    asyncio.run(go())


def test_at_a_stop_idle_connections_close_at_once_and_a_stream_in_flight_finishes() -> None:
    """A restart for a changed config is a stop: no client may lose a request to it. Idle
    kept-alive connections are closed (clients open new ones, which the socket unit holds for
    the next router); a request in flight finishes, and then its connection closes."""

    async def go() -> None:
        backend = Backend(free_port(), chunks=3)
        await backend.start()
        scheduler = Scheduler(
            {"alpha": ModelPolicy("alpha", "native", load_timeout=5)}, set(), Loader(backend)
        )
        scheduler.set_loaded("native", "alpha")
        router = Router(scheduler, {"native": ("127.0.0.1", backend.port)}, RouterMetrics())
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        serving = asyncio.create_task(run(router, sock, lambda _message: None, stop))
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(f"GET {model_path('alpha')}/v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = (await idle_reader.readuntil(b"\r\n\r\n")).decode().lower()
        assert "connection: keep-alive" in head
        await idle_reader.readexactly(int(head.split("content-length: ")[1].split("\r\n")[0]))
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
            client.stream("POST", f"{model_path('alpha')}/v1/chat/completions", json={}) as stream,
        ):
            lines = stream.aiter_lines()
            assert json.loads((await anext(lines)).removeprefix("data: "))["i"] == 0
            stop.set()
            # The idle connection is closed without an answer to anything (EOF).
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""
            assert not serving.done()  # draining: the stream is still in flight
            backend.release.set()
            rest = [line async for line in lines if line]
            assert rest[-1] == "data: [DONE]" and len(rest) == 3
        await asyncio.wait_for(serving, 5)
        idle_writer.close()
        await backend.stop()

    asyncio.run(go())
