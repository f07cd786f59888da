"""The supervisor's probes: what each kind answers is its adapter's (`llmctl.backends`), here
only the generic part, over the one probe client (`llmctl.backends.http.LoopbackClient`).

* liveness: `Adapter.liveness`, cheap and frequent, must not disturb a busy server
  (llama-server `/health`, llama-cpp-python FastAPI's `/docs`, vLLM `/health`, Ollama
  `/api/version`).
* deep: `Adapter.deep_probe`, a one-token completion (Ollama: a generate on a model it has
  loaded; a vLLM in sleep mode that is asleep is skipped). A backend that answers 401/403 (a key
  llmctl does not manage) is skipped, not failed.
* progress: two readings of `Adapter.activity`, `PROGRESS_GAP` apart (llama-server `/slots`,
  vLLM `/metrics`; other kinds have no counters): ok when they moved, skipped when they could
  not be read, failed when they stood still.

Servers started with an API key (`api_key: true`) get it: the installed units' keys, read again
when one answers 401 (restarted with a new key).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from llmctl.backends import adapter_for
from llmctl.kinds import Kind
from llmctl.supervisor.actions import ProbeResult
from llmctl.supervisor.plan import BackendPlan

if TYPE_CHECKING:
    from llmctl.backends.base import Adapter
    from llmctl.backends.http import LoopbackClient, ProbeHttp

# Seconds between the two readings. A generating server moves its counters every token; 5 s
# leaves room for a slow model on a CPU (a token every few seconds) before flat means stuck.
PROGRESS_GAP = 5.0
DEFAULT_TIMEOUT = 5.0  # each probe passes its own; this is only the client's fallback


def client() -> LoopbackClient:
    """One client for every probe: loopback HTTP, no proxies, the backends' keys.

    No keep-alive: an idle kept-alive connection would hold one of llama-server's fixed HTTP
    threads between probes, and a server that closes it at shutdown leaves its own port in
    TIME_WAIT. A new loopback connection per probe costs microseconds."""
    from llmctl.backends.base import probe_client  # noqa: PLC0415

    return probe_client(DEFAULT_TIMEOUT, keep_alive=False)


def _adapter(backend: BackendPlan) -> Adapter:
    return adapter_for(Kind(backend.kind))


def liveness(http: ProbeHttp, backend: BackendPlan, timeout: float) -> ProbeResult:
    return _adapter(backend).liveness(http, backend.url, timeout)


def deep(http: ProbeHttp, backend: BackendPlan, timeout: float) -> ProbeResult:
    return _adapter(backend).deep_probe(
        http, backend.url, backend.model, timeout, sleep_mode=backend.sleep_mode
    )


def progress(http: ProbeHttp, backend: BackendPlan, timeout: float, gap: float = PROGRESS_GAP) -> ProbeResult:
    """Whether a server that did not answer while its process worked is making progress."""
    adapter = _adapter(backend)
    first = adapter.activity(http, backend.url, timeout)
    if first is None:
        return ProbeResult(True, f"{backend.kind} has no work counters to check", skipped=True)
    if first.in_flight is None:
        return ProbeResult(True, f"its work counters cannot be read ({first.detail})", skipped=True)
    time.sleep(gap)
    second = adapter.activity(http, backend.url, timeout)
    if second is None or second.in_flight is None:
        detail = second.detail if second is not None else "none"
        return ProbeResult(True, f"its work counters cannot be read ({detail})", skipped=True)
    if second.counters != first.counters:
        return ProbeResult(True, f"its token counters moved in {gap:g} s ({second.detail})")
    if second.in_flight == 0:
        return ProbeResult(False, f"it has no request in flight ({second.detail})")
    return ProbeResult(
        False, f"its token counters did not move in {gap:g} s with requests in flight ({second.detail})"
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (the backend's main process); None if gone."""
    import psutil  # noqa: PLC0415

    if pid <= 0:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)
