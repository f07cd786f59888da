"""vLLM's OpenAI-compatible server (`vllm serve`).

While the engine loads, the port is bound but not listening: connections are refused, there is
no 503 phase. Ready is /health 200 and /v1/models listing the served name. It binds every
interface unless --host is given, and it can exit 0 after its engine died, hence
Restart=always.
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
from llmctl.config.schema import AnyBackend, Kind, Model, VllmBackend

if TYPE_CHECKING:
    import httpx


class VllmAdapter(Adapter):
    kind = Kind.VLLM
    default_start_timeout = 1200
    restart = "always"

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
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

    def probe(self, client: httpx.Client, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/health")
        if response is None:
            return Probe(Health.DOWN, error, latency)
        if response.status_code != 200:
            # 503 here means the engine died, not that it is loading.
            return Probe(Health.DOWN, f"/health answered {response.status_code}", latency)
        models_response, _, error = timed_get(client, f"{url}/v1/models")
        if models_response is None or models_response.status_code != 200:
            detail = error or f"/v1/models answered {models_response and models_response.status_code}"
            return Probe(Health.LOADING, detail, latency)
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
