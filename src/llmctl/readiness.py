"""Waiting until a server really serves: the `ExecStartPost=` gate and `llmctl up` both use it.

The wait ends as soon as the answer is known: ready, the server process gone (a model that
fails to load makes it exit at once; waiting out the deadline would hide that), or the
deadline. Polling starts fast and backs off, so a quick server is seen within ~20 ms.

Every unit runs the gate (`python -m llmctl wait-ready`) as `ExecStartPost=`, so its start-up
is part of every start: `llmctl/__main__.py` sends `wait-ready` straight to `gate_main` here,
without click or the rest of the CLI, and this module keeps to the standard library (probes
through `backends.http.LoopbackClient`, not httpx; no psutil: /proc says whether the server
process lives).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmctl.backends import adapter_for
from llmctl.backends.base import Health, Probe, probe_client
from llmctl.errors import ExitCode, LlmctlError
from llmctl.kinds import Kind
from llmctl.render.names import REDIS_KIND

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient

GATEWAY_KIND = "gateway"
PROBE_TIMEOUT = 5.0
FAST_INTERVAL = 0.02  # small models load in tens of milliseconds: look often at first
FAST_PERIOD = 2.0
MAX_INTERVAL = 0.5  # then back off: a 70B model takes minutes, no need to ask 50 times a second


# The gate's own probes are cheaper than a `systemctl show` (a refused connect, or a /health
# the server's HTTP thread answers): in the first half second, every 5 ms. A small model is
# served ~50 ms after its start, and each look it misses is the unit's start held back.
GATE_FIRST_INTERVAL = 0.005
GATE_FIRST_PERIOD = 0.5


def gate_interval(waited: float) -> float:
    """Seconds between the readiness gate's probes, `waited` seconds into its wait."""
    return GATE_FIRST_INTERVAL if waited < GATE_FIRST_PERIOD else poll_interval(waited)


def poll_interval(waited: float) -> float:
    """Seconds to wait before the next probe, `waited` seconds into a wait."""
    if waited < FAST_PERIOD:
        return FAST_INTERVAL
    return min(FAST_INTERVAL * 2 ** ((waited - FAST_PERIOD) / 0.5), MAX_INTERVAL)


@dataclass(frozen=True)
class ReadyResult:
    probe: Probe
    waited: float
    attempts: int


def probe_once(client: HttpClient, kind: str, url: str, model: str | None) -> Probe:
    if kind == GATEWAY_KIND:
        from llmctl.backends.gateway import probe_gateway  # noqa: PLC0415 - the backends' gates skip it

        return probe_gateway(client, url)
    if kind == REDIS_KIND:
        return _probe_redis(url)
    return adapter_for(Kind(kind)).probe(client, url, model)


def _probe_redis(url: str) -> Probe:
    """The gateway's Redis speaks RESP, not HTTP: its StackUnit's url gives only host and port."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from llmctl.backends.redis_cache import probe_installed  # noqa: PLC0415
    from llmctl.paths import Paths  # noqa: PLC0415

    parts = urlsplit(url)
    return probe_installed(parts.hostname or "127.0.0.1", parts.port or 6380, Paths.from_env().redis_env_file)


def process_alive(pid: int) -> bool:
    # Imported here: procs brings pathlib (~3 ms), and every unit's gate runs this module.
    from llmctl.procs import process_state  # noqa: PLC0415

    return process_state(pid) == "running"


def wait_ready(
    kind: str,
    url: str,
    model: str | None,
    timeout: float,
    *,
    pid: int | None = None,
    client: HttpClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_probe: Callable[[Probe, float], None] | None = None,
) -> ReadyResult:
    """Poll until ready; raise LlmctlError if the process exits or the deadline passes."""
    if kind != GATEWAY_KIND and kind not in set(Kind):
        raise LlmctlError(
            f"unknown kind {kind!r}", hint=f"one of {', '.join(Kind)}, gateway", exit_code=ExitCode.USAGE
        )
    own_client = probe_client(PROBE_TIMEOUT) if client is None else None
    client = client or own_client
    assert client is not None
    start = clock()
    attempts = 0
    try:
        while True:
            attempts += 1
            probe = probe_once(client, kind, url, model)
            waited = clock() - start
            if on_probe is not None:
                on_probe(probe, waited)
            if probe.health is Health.OK:
                return ReadyResult(probe, waited, attempts)
            if pid is not None and not process_alive(pid):
                raise LlmctlError(
                    f"{kind} at {url}: the server process {pid} exited before it was ready"
                    f" (last probe: {probe.detail})",
                    hint="Its journal says why: llmctl logs NAME, or journalctl --user-unit UNIT.",
                )
            if waited >= timeout:
                raise LlmctlError(
                    f"{kind} at {url} was not ready after {waited:.0f} s (last probe: {probe.detail})",
                    hint="A large model may need a longer start_timeout in the config.",
                )
            sleep(min(gate_interval(waited), max(timeout - waited, 0.0)))
    finally:
        if own_client is not None:
            own_client.close()


def gate_main(argv: list[str]) -> int:
    """`llmctl wait-ready ...`: the gate's command line (argparse, to stay off click's import)."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="llmctl wait-ready",
        description="Return once the server at URL serves (used by the units; handy by hand too).",
    )
    parser.add_argument("--kind", required=True, help="backend kind, or 'gateway'")
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", default=None, help="model id the server must list")
    parser.add_argument("--timeout", type=_seconds, default=300.0, help="seconds (default 300)")
    parser.add_argument("--pid", type=int, default=None, help="give up at once when this process exits")
    args = parser.parse_args(argv)
    try:
        result = wait_ready(args.kind, args.url, args.model, args.timeout, pid=args.pid)
    except LlmctlError as err:
        from llmctl.console import error  # noqa: PLC0415 - the CLI's format, without click

        error(err)
        return int(err.exit_code)
    print(f"ready after {result.waited:.2f} s: {result.probe.detail}")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(text)
    return value
