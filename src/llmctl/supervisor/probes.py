"""The supervisor's probes over HTTP, per backend kind.

Liveness must be cheap and must not disturb a busy server:

* llama-server: `GET /health` (200 ok, 503 loading). Answered by an HTTP thread, not the
  inference loop.
* llama-cpp-python: any HTTP answer on a path without a route (`/health` is a 404). Its
  /v1/models waits for the model lock, and with interrupt_requests on (the default) a request
  waiting for that lock *ends a streaming completion*: the readiness probe's path must not be
  polled every few seconds. A 404 proves the event loop answers.
* vLLM: `GET /health` (503 = engine dead). It stays 200 when the engine is wedged: the deep
  probe covers that.
* Ollama: `GET /api/version`.

Deep: a one-token `/v1/completions` (Ollama: `/api/generate` with num_predict 1 on a model it
already has loaded; none loaded means nothing to test). A vLLM started with an API key
(`api_key: true`) gets it (`llmctl.backends.auth`); a backend that still answers 401/403 (a key
llmctl does not manage) is skipped, not failed; so is a vLLM in sleep mode that is asleep.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmctl.supervisor.engine import ProbeResult
from llmctl.supervisor.plan import BackendPlan

if TYPE_CHECKING:
    import httpx

PROMPT = "Hello"


def client() -> httpx.Client:
    """One client for every probe: loopback HTTP, no proxy from the environment, no CA bundle.

    No keep-alive: an idle kept-alive connection would hold one of llama-server's few HTTP
    threads between probes, and a server that closes it at shutdown leaves its own port in
    TIME_WAIT. A new loopback connection per probe costs microseconds.

    Servers started with an API key get it: the installed units' keys, read again when one
    answers 401 (restarted with a new key)."""
    import httpx  # noqa: PLC0415

    from llmctl.backends.auth import BackendKeys, installed_keys  # noqa: PLC0415

    return httpx.Client(
        trust_env=False,
        verify=False,  # noqa: S501 - plain HTTP to local servers; skips loading the CA bundle
        limits=httpx.Limits(max_keepalive_connections=0),
        auth=BackendKeys(load=installed_keys),
    )


def _request(
    http: httpx.Client, method: str, url: str, timeout: float, body: dict[str, Any] | None = None
) -> tuple[httpx.Response | None, float, str]:
    import httpx  # noqa: PLC0415

    start = time.monotonic()
    try:
        response = http.request(method, url, json=body, timeout=timeout)
    except httpx.TimeoutException:
        return None, (time.monotonic() - start) * 1000, f"timed out after {timeout:g} s"
    except httpx.ConnectError:
        return None, (time.monotonic() - start) * 1000, "connection refused"
    except httpx.HTTPError as exc:
        return None, (time.monotonic() - start) * 1000, f"{type(exc).__name__}: {exc}"
    return response, (time.monotonic() - start) * 1000, ""


def liveness(http: httpx.Client, backend: BackendPlan, timeout: float) -> ProbeResult:
    path = "/api/version" if backend.kind == "ollama" else "/health"
    response, latency, error = _request(http, "GET", backend.url + path, timeout)
    if response is None:
        return ProbeResult(False, f"GET {path}: {error}", latency)
    status = response.status_code
    if backend.kind == "llama-cpp-python":
        if status < 500:
            return ProbeResult(True, f"GET {path} answered {status}", latency)
        return ProbeResult(False, f"GET {path} answered {status}", latency)
    if status == 200:
        return ProbeResult(True, f"GET {path} 200", latency)
    if backend.kind == "llama-server" and status == 503:
        return ProbeResult(False, f"loading model (GET {path} 503)", latency, loading=True)
    return ProbeResult(False, f"GET {path} answered {status}", latency)


def deep(http: httpx.Client, backend: BackendPlan, timeout: float) -> ProbeResult:
    if backend.kind == "ollama":
        return _deep_ollama(http, backend, timeout)
    if backend.kind == "vllm" and backend.sleep_mode:
        response, _, _ = _request(http, "GET", backend.url + "/is_sleeping", min(timeout, 5.0))
        if response is not None and response.status_code == 200 and _json(response).get("is_sleeping"):
            return ProbeResult(True, "asleep (sleep mode): not tested", skipped=True)
    body = {"model": backend.model or "default", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    response, latency, error = _request(http, "POST", backend.url + "/v1/completions", timeout, body)
    return _judge(response, latency, error, "one-token completion", lambda data: bool(data.get("choices")))


def _deep_ollama(http: httpx.Client, backend: BackendPlan, timeout: float) -> ProbeResult:
    response, _, error = _request(http, "GET", backend.url + "/api/ps", min(timeout, 5.0))
    if response is None or response.status_code != 200:
        return ProbeResult(False, f"GET /api/ps: {error or (response and response.status_code)}")
    loaded = [m.get("name") for m in _json(response).get("models") or [] if isinstance(m, dict)]
    if not loaded:
        return ProbeResult(True, "no model loaded: nothing to test", skipped=True)
    body = {"model": loaded[0], "prompt": PROMPT, "stream": False, "options": {"num_predict": 1}}
    response, latency, error = _request(http, "POST", backend.url + "/api/generate", timeout, body)
    return _judge(response, latency, error, f"one-token generate on {loaded[0]}", lambda d: "response" in d)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _judge(response: httpx.Response | None, latency: float, error: str, what: str, good: Any) -> ProbeResult:
    if response is None:
        return ProbeResult(False, f"the {what} failed: {error}", latency)
    if response.status_code in (401, 403):
        return ProbeResult(True, f"the {what} needs the API key: not tested", latency, skipped=True)
    if response.status_code != 200:
        return ProbeResult(
            False, f"the {what} answered {response.status_code}: {response.text[:120]}", latency
        )
    if not good(_json(response)):
        return ProbeResult(False, f"the {what} answered 200 without a result", latency)
    return ProbeResult(True, f"the {what} answered in {latency:.0f} ms", latency)


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
