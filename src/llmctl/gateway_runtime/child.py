"""One gateway generation: LiteLLM's proxy app under uvicorn, on a socket inherited from the supervisor.

Run by the LiteLLM venv's python *by path* (``python -I -u child.py --fd N ...``); that venv does
not have llmctl, so this file imports nothing from it (stdlib, uvicorn and litellm only). The
config comes through CONFIG_FILE_PATH, the master key through the environment. The config's
``custom_auth`` hook is imported from ``litellm_hooks/`` beside this file (``HOOKS_DIR``), which
it puts on ``sys.path``.

* The inherited fd is wrapped as ``socket.socket(fileno=N)``: uvicorn's own ``--fd`` treats it as
  AF_UNIX, and asyncio then leaves TCP_NODELAY off on accepted connections.
* Once uvicorn has run LiteLLM's lifespan (the config load) and accepts, ``READY`` goes to the
  supervisor on the inherited pipe ``--ready-fd``.
* On SIGTERM it **drains**: uvicorn alone would close every keep-alive connection that is
  between requests, and the client's next request on it fails (measured: about one request per
  keep-alive client). So first it stops accepting (the queue is left to the next generation),
  answers everything with ``Connection: close``, and waits (at most ``--drain-timeout``) until
  its connections are gone; idle ones end by uvicorn's keep-alive timeout. Then uvicorn's normal
  shutdown runs, bounded by ``--graceful-timeout``.

``LLMCTL_GATEWAY_DRAIN=0`` turns the drain off; it exists for the test that shows why it is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

APP = "litellm.proxy.proxy_server"  # its `app`; the lifespan loads CONFIG_FILE_PATH
# gateway.yaml's custom_auth module (llmctl_gateway_auth) is imported from here. `python -I`
# ignores PYTHONPATH, and this directory holds only llmctl's hooks, so appending it shadows nothing.
HOOKS_DIR = Path(__file__).resolve().parent / "litellm_hooks"
PR_SET_PDEATHSIG = 1
STARTUP_FAILED = 3  # like uvicorn.run: the lifespan (config load) failed


class Log:
    prefix = "llmctl-gateway child"

    def __call__(self, message: str) -> None:
        print(f"{self.prefix}: {message}", file=sys.stderr, flush=True)


log = Log()


class ConnectionClose:
    """ASGI middleware: once `draining` is set, every response carries `Connection: close`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if self.draining and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if bytes(k).lower() != b"connection"]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


def die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM (and drain) if the supervisor dies, instead of serving on as an orphan."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        sys.exit(f"{log.prefix}: the supervisor (pid {parent_pid}) is gone")


async def drain(
    server: Any, app: ConnectionClose, sockets: list[socket.socket] | None, timeout: float
) -> None:
    started = time.monotonic()
    app.draining = True
    # Stop accepting; what waits in the kernel's queue is the next generation's to accept.
    for listener in server.servers:
        listener.close()
    for sock in sockets or []:
        sock.close()
    connections = server.server_state.connections
    if connections:
        log(f"draining {len(connections)} connection(s), at most {timeout:g} s")
    while connections and not server.force_exit and time.monotonic() - started < timeout:
        await asyncio.sleep(0.05)
    took = time.monotonic() - started
    if connections:
        log(f"{len(connections)} connection(s) still open after {took:.1f} s; closing them")
    else:
        log(f"drained in {took:.2f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    parser.add_argument("--ready-fd", type=int, required=True, help="write READY here once serving")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--generation", type=int, default=0)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--graceful-timeout", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=4096)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log.prefix = f"llmctl-gateway generation {args.generation} (pid {os.getpid()})"
    die_with_parent(args.parent_pid)
    sock = socket.socket(fileno=args.fd)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    use_drain = os.environ.get("LLMCTL_GATEWAY_DRAIN", "1") != "0"
    if not use_drain:
        log("drain disabled (LLMCTL_GATEWAY_DRAIN=0): keep-alive clients will see errors")

    sys.path.append(str(HOOKS_DIR))
    uvicorn = importlib.import_module("uvicorn")
    app = ConnectionClose(importlib.import_module(APP).app)
    config = uvicorn.Config(
        app,
        lifespan="on",
        backlog=args.backlog,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,  # as LiteLLM's own CLI
    )
    server = uvicorn.Server(config)
    uvicorn_startup = server.startup
    uvicorn_shutdown = server.shutdown

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await uvicorn_startup(sockets=sockets)
        if not server.started or server.should_exit:
            return
        try:
            os.write(args.ready_fd, b"READY\n")
            os.close(args.ready_fd)
        except OSError as err:  # the supervisor is gone
            log(f"cannot report readiness ({err}); stopping")
            server.should_exit = True
            return
        log(f"ready on {sock.getsockname()}")

    async def shutdown(sockets: list[socket.socket] | None = None) -> None:
        if use_drain:
            await drain(server, app, sockets, args.drain_timeout)
        await uvicorn_shutdown(sockets=sockets)

    server.startup = startup
    server.shutdown = shutdown
    server.run(sockets=[sock])
    # After a signal, uvicorn re-raises it at the end of run(): a drained child exits by SIGTERM.
    return 0 if server.started else STARTUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
