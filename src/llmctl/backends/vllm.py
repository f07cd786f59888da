"""vLLM's OpenAI-compatible server (`vllm serve`).

While the engine loads, the port is bound but not listening: connections are refused, there is
no 503 phase. Ready is /health 200 and /v1/models listing the served name. It binds every
interface unless --host is given, and it can exit 0 after its engine died, hence
Restart=always. With sleep mode on, `sleep`/`wake_up` free and restore its GPU memory
without a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.backends.base import (
    Adapter,
    Health,
    Launch,
    Probe,
    gpu_environment,
    openai_model_ids,
    timed_get,
)
from llmctl.backends.checks import Activity, Check, get_check, one_token_completion, prometheus_values
from llmctl.errors import LlmctlError
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient, HttpResponse, ProbeHttp
    from llmctl.config.schema import AnyBackend, Model


class VllmAdapter(Adapter):
    kind = Kind.VLLM
    default_start_timeout = 1200
    restart = "always"
    # `--api-key` would put the key into the argv (ps, /proc/PID/cmdline); vLLM also reads it
    # from this variable (the flag wins if both are set).
    api_key_variable = "VLLM_API_KEY"

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        from llmctl.config.schema import VllmBackend  # noqa: PLC0415 - pydantic is loaded when rendering

        assert isinstance(backend, VllmBackend)
        # vLLM serves exactly one model per process; the config checks require it.
        assert model_id is not None and model is not None and model.source is not None
        argv = [
            executable, "serve", model.source,
            "--host", backend.host,
            "--port", str(backend.port),
            "--served-model-name", model_id,
            "--gpu-memory-utilization", f"{backend.gpu_memory_utilization:g}",
        ]  # fmt: skip
        if model.context is not None:
            argv += ["--max-model-len", str(model.context)]
        if backend.tensor_parallel_size is not None:
            argv += ["--tensor-parallel-size", str(backend.tensor_parallel_size)]
        env = gpu_environment(backend)
        if backend.sleep_mode:
            argv.append("--enable-sleep-mode")
            # The /sleep and /wake_up endpoints exist only in dev mode (unauthenticated:
            # another reason the backend stays on loopback).
            env["VLLM_SERVER_DEV_MODE"] = "1"
        # Engine start-up has its own timeout (600 s by default); keep it within ours.
        env["VLLM_ENGINE_READY_TIMEOUT_S"] = str(backend.start_timeout or self.default_start_timeout)
        return Launch(argv=[*argv, *backend.args], environment=env)

    def probe(self, client: HttpClient, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/health")
        if response is None:
            # Also what loading looks like: the port is bound but not listening until ready.
            return Probe(Health.DOWN, error, latency)
        if response.status_code == 503:
            # 503 here means the engine died, not that it is loading.
            return Probe(Health.DOWN, "engine dead (/health answered 503)", latency)
        if response.status_code != 200:
            return Probe(Health.DOWN, f"/health answered {response.status_code}", latency)
        models_response, _, error = timed_get(client, f"{url}/v1/models")
        if models_response is not None and models_response.status_code == 401:
            if "authorization" in models_response.request.headers:
                # llmctl sent the key of the installed unit: the server holds another one.
                detail = "/v1/models refused the API key (401): restart it to read the current key"
                return Probe(Health.DOWN, detail, latency)
            # An API key guards /v1 (never /health). /health 200 already means ready; only the
            # served name cannot be checked without the key.
            return Probe(Health.OK, "/health 200 (/v1/models needs the API key: name not checked)", latency)
        if models_response is None or models_response.status_code != 200:
            # It listens only once the engine is ready, so this is an error, not loading.
            detail = error or f"/v1/models answered {models_response and models_response.status_code}"
            return Probe(Health.DOWN, detail, latency)
        models = openai_model_ids(models_response)
        if model_id is not None and model_id not in models:
            return Probe(Health.DOWN, f"serves {list(models)}, not {model_id}", latency, models)
        return Probe(Health.OK, "/health 200", latency, models)

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        return {
            "model": f"hosted_vllm/{model_id}",
            "api_base": f"{self.url(backend)}/v1",
            "api_key": "none",
        }

    def liveness(self, client: ProbeHttp, url: str, timeout: float) -> Check:
        # 503 means the engine died. /health stays 200 when the engine is wedged: the deep probe
        # and the token counters cover that.
        response, check = get_check(client, url, "/health", timeout)
        if response is not None and response.status_code == 503:
            return Check(False, "engine dead (GET /health 503)", check.latency_ms)
        return check

    def deep_probe(
        self, client: ProbeHttp, url: str, model: str | None, timeout: float, *, sleep_mode: bool = False
    ) -> Check:
        # Cannot tell (None): the completion says whether it infers.
        if sleep_mode and self.is_sleeping(client, url):
            return Check(True, "asleep (sleep mode): not tested", skipped=True)
        return one_token_completion(client, url, model, timeout)

    def is_sleeping(self, client: HttpClient, url: str) -> bool | None:
        try:
            return is_sleeping(client, url)
        except LlmctlError:
            return None  # not answering, or started without sleep mode (no endpoint)

    def activity(self, client: ProbeHttp, url: str, timeout: float) -> Activity | None:
        """From /metrics (always on, answered by the API server even when the engine hangs)."""
        response, check = get_check(client, url, "/metrics", timeout)
        if response is None or response.status_code != 200:
            return Activity(None, detail=check.detail)
        values = prometheus_values(response.text, _VLLM_COUNTERS)
        if "vllm:num_requests_running" not in values:
            return Activity(None, detail="GET /metrics has no vllm:num_requests_running")
        running = int(values["vllm:num_requests_running"])
        counters = tuple(int(values.get(name, -1)) for name in _VLLM_COUNTERS[1:])
        return Activity(running, counters, f"{running} requests running")


_VLLM_COUNTERS = ("vllm:num_requests_running", "vllm:generation_tokens_total", "vllm:prompt_tokens_total")


# Sleep mode (--enable-sleep-mode plus VLLM_SERVER_DEV_MODE=1, i.e. `sleep_mode: true`): the
# endpoints sit at the root, not under /v1, and are never authenticated.
_SLEEP_HINT = (
    "Sleep mode needs `sleep_mode: true` on the backend (llmctl then passes --enable-sleep-mode and "
    "sets VLLM_SERVER_DEV_MODE=1; without dev mode vLLM has no such endpoints), then `llmctl up`."
)


def _dev_call(
    client: HttpClient, method: str, url: str, path: str, params: dict[str, int] | None = None
) -> HttpResponse:
    from llmctl.backends.http import transport_errors  # noqa: PLC0415

    try:
        response = client.request(method, f"{url}{path}", params=params)
    except transport_errors() as exc:
        raise LlmctlError(
            f"vLLM at {url} did not answer {path}: {type(exc).__name__}: {exc}",
            hint="Is the backend running and ready? llmctl status",
        ) from exc
    if response.status_code == 404:
        raise LlmctlError(f"vLLM at {url} has no {path} endpoint (404)", hint=_SLEEP_HINT)
    if response.status_code != 200:
        raise LlmctlError(
            f"vLLM at {url}: {method} {path} answered {response.status_code}: {response.text.strip()[:200]}"
        )
    return response


def sleep(client: HttpClient, url: str, level: int) -> None:
    """Level 1: weights to CPU RAM, KV cache dropped (needs the RAM). Level 2: both dropped."""
    if level not in (1, 2):
        raise ValueError(f"sleep level must be 1 or 2, not {level}")
    _dev_call(client, "POST", url, "/sleep", {"level": level})


def wake_up(client: HttpClient, url: str) -> None:
    # Older releases answer 200 with an empty body, newer ones with {"status": ...}: the
    # status code is the answer.
    _dev_call(client, "POST", url, "/wake_up")


def is_sleeping(client: HttpClient, url: str) -> bool:
    response = _dev_call(client, "GET", url, "/is_sleeping")
    try:
        value = response.json()["is_sleeping"]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, bool):
        raise LlmctlError(f"vLLM at {url}: /is_sleeping answered {response.text.strip()[:200]!r}")
    return value
