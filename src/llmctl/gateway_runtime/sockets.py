"""What systemd hands the gateway supervisor: the listening socket (LISTEN_FDS, or one it binds
itself when run by hand) and the notify socket (NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from llmctl.errors import LlmctlError
from llmctl.gateway_runtime import BACKLOG

SD_LISTEN_FDS_START = 3
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# Meant for the supervisor only: a child must not see them (NotifyAccess=main refuses it anyway).
NOT_FOR_CHILDREN = (*LISTEN_VARS, "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")

Notify = Callable[[str], None]


def systemd_notifier() -> Notify:
    """sd_notify through $NOTIFY_SOCKET, or nothing when not run by systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda _message: None
    import sdnotify  # noqa: PLC0415

    notifier = sdnotify.SystemdNotifier()

    def notify(message: str) -> None:
        notifier.notify(message)

    return notify


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def inherited_socket(env: dict[str, str] | os._Environ[str]) -> socket.socket | None:
    """The socket systemd passed (LISTEN_PID/LISTEN_FDS, fd 3), or None; the variables go."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = env.get("LISTEN_FDS", "")
    for name in LISTEN_VARS:
        env.pop(name, None)
    if count != "1":
        raise LlmctlError(
            f"systemd passed LISTEN_FDS={count!r}; the gateway takes exactly one socket",
            hint="The socket unit must have one ListenStream= line.",
        )
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise LlmctlError("fd 3 from systemd is not a listening stream socket")
    # Only the children get it, through pass_fds.
    os.set_inheritable(sock.fileno(), False)
    _set_nodelay(sock)
    return sock


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as err:
        raise LlmctlError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    _set_nodelay(sock)
    return sock


def address_of(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return str(name)
