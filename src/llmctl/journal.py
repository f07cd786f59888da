"""Structured journal entries through journald's native protocol (stdlib only).

`systemd-cat` only carries text; `journalctl LLMCTL_BACKEND=x` needs fields. journald reads one
datagram per entry on /run/systemd/journal/socket: `KEY=VALUE` lines, or, for a value that
holds a newline, `KEY\\n` + its length as 64-bit little-endian + the value + `\\n`
(systemd's "Native Journal Protocol"). journald adds the trusted fields itself (_PID,
_SYSTEMD_UNIT of the sender's cgroup, ...), so an entry sent by the supervisor service is
filed under llmctl-supervisor.service.

Sending never raises: without a journal (a container, a test) the entry is simply not sent,
and `send` says so by returning False.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Mapping

SOCKET_PATH = "/run/systemd/journal/socket"
_FIELD = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,63}$")

# syslog priorities
ERR = 3
WARNING = 4
NOTICE = 5
INFO = 6


def encode(fields: Mapping[str, object]) -> bytes:
    """One datagram of the native protocol. Field names: upper case, digits, underscores."""
    out = bytearray()
    for key, value in fields.items():
        if not _FIELD.match(key):
            raise ValueError(f"not a journal field name: {key!r}")
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def send(
    message: str,
    *,
    priority: int = INFO,
    identifier: str = "llmctl",
    fields: Mapping[str, object] | None = None,
    socket_path: str | None = None,
) -> bool:
    """Send one entry; True when journald took it."""
    entry: dict[str, object] = {
        "MESSAGE": message,
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": identifier,
        "SYSLOG_PID": os.getpid(),
    }
    for key, value in (fields or {}).items():
        if value is not None:
            entry[key] = value
    try:
        payload = encode(entry)
    except ValueError:
        return False
    path = socket_path or SOCKET_PATH
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, path)
    except OSError:
        # No journald here, or the entry is too large for one datagram (ours are small).
        return False
    return True
