"""The gateway's Redis (gateway.cache) as a probe target: AUTH, PING and DBSIZE over a socket.

A few lines of RESP, Redis's wire protocol, instead of a client library: the three commands
are sent at once and each answers with one line (`+OK`, `+PONG`, `:42`, or `-ERROR text`).
`status` and `up` judge Redis by this answer, so a Redis that runs but refuses our password
(or is still loading its data) does not read as healthy.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from llmctl.backends.base import Health, Probe

PROBE_TIMEOUT = 3.0
_MAX_REPLY = 4096


def command(*words: str) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _replies(sock: socket.socket, count: int) -> list[str]:
    buffer = b""
    while buffer.count(b"\r\n") < count:
        chunk = sock.recv(_MAX_REPLY)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        buffer += chunk
        if len(buffer) > _MAX_REPLY:
            raise ConnectionError("an answer too long for AUTH, PING and DBSIZE")
    return [line.decode("utf-8", errors="replace") for line in buffer.split(b"\r\n")[:count]]


def probe_redis(host: str, port: int, password: str | None, timeout: float = PROBE_TIMEOUT) -> Probe:
    """ok: it answered PONG to an authenticated PING; loading: it is reading its data back;
    down: refused, no answer, or an error (a wrong password among them)."""
    start = time.monotonic()
    words = [command("AUTH", password)] if password is not None else []
    words += [command("PING"), command("DBSIZE")]
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"".join(words))
            replies = _replies(sock, len(words))
    except ConnectionRefusedError:
        return Probe(Health.DOWN, "connection refused", _ms(start))
    except TimeoutError:
        return Probe(Health.DOWN, f"no answer in {timeout:g} s", _ms(start))
    except OSError as exc:
        return Probe(Health.DOWN, str(exc) or type(exc).__name__, _ms(start))
    latency = _ms(start)
    errors = [r[1:] for r in replies if r.startswith("-")]
    if errors:
        first = errors[0]
        if first.startswith("LOADING"):
            return Probe(Health.LOADING, "loading its data (LOADING)", latency)
        if password is None and first.startswith("NOAUTH"):
            return Probe(Health.DOWN, "wants a password, and llmctl has none (redis.env)", latency)
        if first.startswith(("WRONGPASS", "NOAUTH", "ERR AUTH", "ERR invalid password")):
            return Probe(Health.DOWN, f"refuses llmctl's password ({first.split()[0]})", latency)
        return Probe(Health.DOWN, f"answered {first[:120]}", latency)
    pong, size = replies[-2], replies[-1]
    if pong != "+PONG":
        return Probe(Health.DOWN, f"answered {pong[:120]!r} to PING", latency)
    keys = size[1:] if size.startswith(":") else "?"
    return Probe(Health.OK, f"PONG ({keys} keys)", latency)


def probe_installed(host: str, port: int, env_file: Path, timeout: float = PROBE_TIMEOUT) -> Probe:
    """The probe with the password llmctl generated (redis.env); without that file, a plain
    PING, which a Redis that wants a password answers NOAUTH."""
    from llmctl.errors import LlmctlError  # noqa: PLC0415
    from llmctl.secrets import read_redis_password  # noqa: PLC0415

    try:
        password: str | None = read_redis_password(env_file)
    except (LlmctlError, OSError):
        password = None
    return probe_redis(host, port, password, timeout)


def _ms(start: float) -> float:
    return (time.monotonic() - start) * 1000
