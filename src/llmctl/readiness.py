"""Waiting until a server really serves: the `ExecStartPost=` gate and `llmctl up` both use it.

The wait ends as soon as the answer is known: ready, the server process gone (a model that
fails to load makes it exit at once; waiting out the deadline would hide that), or the
deadline. Polling starts fast and backs off, so a quick server is seen within ~50 ms.
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
from llmctl.config.schema import Kind
from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    import httpx

GATEWAY_KIND = "gateway"
PROBE_TIMEOUT = 5.0
FIRST_INTERVAL = 0.05
MAX_INTERVAL = 0.5


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
    interval = FIRST_INTERVAL
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
            sleep(min(interval, max(timeout - waited, 0.0)))
            interval = min(interval * 2, MAX_INTERVAL)
    finally:
        if own_client:
            client.close()
