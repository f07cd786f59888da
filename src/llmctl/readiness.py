"""Waiting until a server really serves: the `ExecStartPost=` gate and `llmctl up` both use it.

The wait ends as soon as the answer is known: ready, the server process gone (a model that
fails to load makes it exit at once; waiting out the deadline would hide that), or the
deadline. Polling starts fast and backs off, so a quick server is seen within ~20 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from llmctl.backends import adapter_for
from llmctl.backends.base import Health, Probe, probe_client
from llmctl.backends.gateway import probe_gateway
from llmctl.errors import LlmctlError
from llmctl.kinds import Kind

if TYPE_CHECKING:
    import httpx

GATEWAY_KIND = "gateway"
PROBE_TIMEOUT = 5.0
FAST_INTERVAL = 0.02  # small models load in tens of milliseconds: look often at first
FAST_PERIOD = 2.0
MAX_INTERVAL = 0.5  # then back off: a 70B model takes minutes, no need to ask 50 times a second


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


def probe_once(client: httpx.Client, kind: str, url: str, model: str | None) -> Probe:
    if kind == GATEWAY_KIND:
        return probe_gateway(client, url)
    return adapter_for(Kind(kind)).probe(client, url, model)


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_ready(
    kind: str,
    url: str,
    model: str | None,
    timeout: float,
    *,
    pid: int | None = None,
    client: httpx.Client | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_probe: Callable[[Probe, float], None] | None = None,
) -> ReadyResult:
    """Poll until ready; raise LlmctlError if the process exits or the deadline passes."""
    if kind != GATEWAY_KIND and kind not in set(Kind):
        raise LlmctlError(f"unknown kind {kind!r}", hint=f"one of {', '.join(Kind)}, gateway")
    own_client = client is None
    client = client or probe_client(PROBE_TIMEOUT)
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
                    hint="Its journal says why: llmctl logs NAME, or journalctl -u UNIT.",
                )
            if waited >= timeout:
                raise LlmctlError(
                    f"{kind} at {url} was not ready after {waited:.0f} s (last probe: {probe.detail})",
                    hint="A large model may need a longer start_timeout in the config.",
                )
            sleep(min(poll_interval(waited), max(timeout - waited, 0.0)))
    finally:
        if own_client:
            client.close()
