"""The router process: accept on the socket systemd holds, admit, forward, answer the CLI.

Paths it answers:

* `/m/ID/...`: a model's address (what LiteLLM is configured with); the rest of the path goes
  to the backend that has ID loaded, once it has;
* `GET /_llmctl/state`: per backend what is loaded, what is available, queue, in flight, last
  use (`llmctl status`);
* `POST /_llmctl/switch` `{"model": ID}`: `llmctl switch` through the same queue;
* `GET /_llmctl/metrics`: Prometheus text (loads, load time, queue wait, evictions by reason,
  requests answered 503, which LiteLLM fails over to fallbacks).

Every request but a read of state or metrics carries the router's key (`Authorization:
Bearer`, from router.env, 0600): loopback is every local user's. A model's request goes on with
its backend's own key, or none, never the router's.

A backend that is restarting (its process crashed, the supervisor restarted it) refuses
connections or answers 503 "Loading model" for a while: a request that has not been sent yet
waits for it (bounded by the model's load timeout) instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmctl.errors import LlmctlError
from llmctl.router import CONTROL_PREFIX, split_target
from llmctl.router.http1 import (
    Head,
    ProtocolError,
    Request,
    json_response,
    openai_error,
    read_head,
    read_request,
    relay_response,
    status_of,
    upstream_request,
)
from llmctl.router.metrics import RouterMetrics
from llmctl.router.scheduler import Event, Lease, Scheduler, Unavailable
from llmctl.router.watch import UnitWatch

RETRY_PAUSE = 0.1  # between attempts to reach a backend that is restarting
CONNECT_TIMEOUT = 5.0


@dataclass
class Router:
    scheduler: Scheduler
    addresses: dict[str, tuple[str, int]]  # backend -> (host, port)
    metrics: RouterMetrics = field(default_factory=RouterMetrics)
    started: float = field(default_factory=time.time)
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    between_requests: set[asyncio.Task[None]] = field(default_factory=set)  # kept-alive, waiting
    watch: UnitWatch | None = None  # notices backends changed by other commands
    is_running: Callable[[str], bool] = lambda _backend: True  # the backend's unit is active
    # The key every request but a read of state or metrics must carry (the gateway's, a
    # switch's); read for each one, so a new file counts at once. None: no key asked.
    key: Callable[[], str] | None = None
    # A backend's own API key, which the router sends in place of its own (None: no key).
    backend_key: Callable[[str], str | None] = lambda _backend: None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            keep = True
            while keep:
                waiting = {task} if task is not None else set()
                self.between_requests |= waiting
                try:
                    request = await read_request(reader)
                except ProtocolError as exc:
                    writer.write(openai_error(400, f"llmctl router: {exc}", "bad_request"))
                    break
                finally:
                    self.between_requests -= waiting
                if request is None:
                    break
                keep = not request.head.wants_close()
                keep = await self.answer(request, writer, keep)
                await writer.drain()
                if self.scheduler.stopping:
                    break  # its last request: the next one comes on a new connection
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; its lease (if any) was released on the way out
        finally:
            if task is not None:
                self.connections.discard(task)
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()
                await writer.wait_closed()

    async def answer(self, request: Request, writer: asyncio.StreamWriter, keep: bool) -> bool:
        if request.target.startswith(CONTROL_PREFIX):
            writer.write(await self.control(request))
            return keep
        split = split_target(request.target)
        if split is None:
            writer.write(openai_error(404, f"llmctl router: no model address {request.target}", "not_found"))
            return keep
        model, path = split
        if not self._authorized(request):
            writer.write(
                openai_error(401, "llmctl router: a request needs the router's key (router.env; the gateway "
                             "sends it)", "invalid_api_key")
            )  # fmt: skip
            return keep
        self._sync(model)
        queued = time.monotonic()
        try:
            lease = await self.scheduler.admit(model)
        except Unavailable as exc:
            self.metrics.unavailable(model)
            writer.write(openai_error(503, f"llmctl: {model} is unavailable: {exc}", "model_unavailable"))
            return keep and not self.scheduler.stopping
        self.metrics.admitted(model, time.monotonic() - queued)
        try:
            # Stopping (a restart, say): this connection's last request; the client's next one
            # comes on a new connection, which waits in the socket for the next router.
            return await self.forward(lease, request, path, writer, keep and not self.scheduler.stopping)
        finally:
            lease.release()

    def _sync(self, model: str) -> None:
        backend = self.scheduler.backend_of(model)
        if self.watch is None or backend is None or not self.watch.changed(backend):
            return
        self.scheduler.observe(backend, self.watch.model(backend), self.is_running(backend))

    def _still_serves(self, lease: Lease) -> bool:
        """Before trying again: the unit must still name the model (not changed under us)."""
        if self.watch is None or lease.slot.serves_many:
            return True
        return self.watch.model(lease.slot.name) == lease.model

    async def forward(
        self, lease: Lease, request: Request, path: str, writer: asyncio.StreamWriter, keep: bool
    ) -> bool:
        host, port = self.addresses[lease.slot.name]
        deadline = time.monotonic() + self.scheduler.policies[lease.model].load_timeout
        backend_key = self.backend_key(lease.slot.name)
        while True:
            upstream = await self._send(host, port, request, path, backend_key)
            if upstream is not None:
                up_reader, up_writer, head = upstream
                try:
                    if status_of(head) == 503 and time.monotonic() < deadline:
                        # Still loading (a restart after a crash): the body says so; try again.
                        await asyncio.sleep(RETRY_PAUSE)
                        continue
                    return await relay_response(head, up_reader, writer, keep_alive=keep)
                finally:
                    up_writer.close()
            if not self._still_serves(lease):
                writer.write(
                    openai_error(503, f"llmctl: {lease.slot.name} was changed by another command while "
                                 f"{lease.model} waited for it", "backend_changed")
                )  # fmt: skip
                return keep
            if time.monotonic() >= deadline:
                writer.write(
                    openai_error(503, f"llmctl: {lease.model}: its backend {lease.slot.name} does not answer",
                                 "backend_unavailable")
                )  # fmt: skip
                return keep
            await asyncio.sleep(RETRY_PAUSE)

    async def _send(
        self, host: str, port: int, request: Request, path: str, backend_key: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Head] | None:
        """Send the request; the response head, or None when nothing could be sent or read
        (the backend is down or restarting: nothing reached a model, so trying again is safe)."""
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            return None
        sock = up_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            up_writer.write(upstream_request(request, path, f"{host}:{port}", backend_key))
            await up_writer.drain()
            head = await read_head(up_reader)
        except (OSError, ProtocolError, asyncio.IncompleteReadError):
            head = None
        if head is None:
            up_writer.close()
            return None
        return up_reader, up_writer, head

    def _authorized(self, request: Request) -> bool:
        if self.key is None:
            return True
        try:
            key = self.key()
        except (LlmctlError, OSError):  # no readable key file: nothing can match it
            return False
        scheme, _, offered = (request.head.get("authorization") or "").partition(" ")
        return (
            scheme == "Bearer" and bool(key) and hmac.compare_digest(offered.strip().encode(), key.encode())
        )

    async def control(self, request: Request) -> bytes:
        what = request.target[len(CONTROL_PREFIX) :].split("?", 1)[0]
        if what == "state" and request.method == "GET":
            return json_response(
                200, {"pid": os.getpid(), "started": self.started, "backends": self.scheduler.snapshot()}
            )
        if what == "metrics" and request.method == "GET":
            data = self.metrics.render(self.scheduler).encode()
            head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            return f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data
        if what == "switch" and request.method == "POST":
            if not self._authorized(request):
                return json_response(
                    401, {"error": "a switch needs the router's key (llmctl switch sends it; see router.env)"}
                )
            try:
                model = str(json.loads(request.body or b"{}")["model"])
                outcome = await self.scheduler.switch(model)
            except (ValueError, KeyError, TypeError):
                return json_response(400, {"error": 'the body must be {"model": ID}'})
            except Unavailable as exc:
                return json_response(409, {"error": str(exc)})
            return json_response(
                200, {"model": model, "loaded": outcome.loaded, "seconds": round(outcome.seconds, 3),
                      "unchanged": outcome.unchanged, "evicted": list(outcome.evicted)},
            )  # fmt: skip
        return json_response(404, {"error": f"no such control path {request.target}"})


def event_recorder(state_dir: os.PathLike[str] | str, metrics: RouterMetrics) -> Callable[[Event], None]:
    """Router events into `llmctl events` (events.jsonl and the journal) and the metrics."""
    from pathlib import Path  # noqa: PLC0415

    from llmctl.supervisor import events  # noqa: PLC0415

    def record(event: Event) -> None:
        metrics.event(event)
        evidence: dict[str, object] = {"model": event.model}
        if event.seconds is not None:
            evidence["seconds"] = round(event.seconds, 3)
        with contextlib.suppress(OSError):
            events.record(
                Path(state_dir), events.make(event.backend, event.kind, event.detail, evidence=evidence)
            )

    return record


async def run(
    router: Router, sock: socket.socket, notify: Callable[[str], None], stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM (or `stop`), then drain: requests in flight finish (bounded), the ones
    waiting for a load fail."""
    server = await asyncio.start_server(router.handle, sock=sock)
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    unloads = asyncio.create_task(router.scheduler.run_idle_unloads())
    notify("READY=1\nSTATUS=routing")
    await stop.wait()
    notify("STOPPING=1\nSTATUS=draining requests in flight")
    server.close()  # no new connections; the socket unit keeps queueing them for the next start
    for connection in list(router.between_requests):
        # Kept open between requests: closed now, a client sees it before it sends the next
        # request (httpx and aiohttp check a pooled connection) and opens a new one.
        connection.cancel()
    unloads.cancel()
    await router.scheduler.drain_all()
    for task in list(router.connections):
        task.cancel()
    await asyncio.gather(*router.connections, return_exceptions=True)
