"""llama.cpp's native `llama-server`.

It listens before the model is loaded and answers every path with 503 until then, so
`/health` tells loading from ready. Defaults (port, context, offload, parallel slots) have
changed between releases, so host, port, context and GPU layers are always passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.backends.base import (
    Adapter,
    Health,
    Launch,
    Probe,
    default_gpu_layers,
    gpu_environment,
    openai_model_ids,
    timed_get,
)
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient
    from llmctl.config.schema import AnyBackend, Model

DEFAULT_CONTEXT = 4096


class LlamaServerAdapter(Adapter):
    kind = Kind.LLAMA_SERVER

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        argv = [executable, "--host", backend.host, "--port", str(backend.port)]
        if model_id is not None and model is not None and model.source is not None:
            argv += [
                "--model", model.source,
                "--alias", model_id,
                "--ctx-size", str(model.context or DEFAULT_CONTEXT),
                "--n-gpu-layers", str(default_gpu_layers(backend, model)),
            ]  # fmt: skip
        return Launch(argv=[*argv, *backend.args], environment=gpu_environment(backend))

    def probe(self, client: HttpClient, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/health")
        if response is None:
            return Probe(Health.DOWN, error, latency)
        if response.status_code == 503:
            return Probe(Health.LOADING, "loading model (/health 503)", latency)
        if response.status_code != 200:
            return Probe(Health.DOWN, f"/health answered {response.status_code}", latency)
        models_response, _, error = timed_get(client, f"{url}/v1/models")
        models = openai_model_ids(models_response) if models_response is not None else ()
        if model_id is not None and model_id not in models:
            return Probe(Health.LOADING, f"serves {list(models)}, not {model_id}", latency, models)
        return Probe(Health.OK, "/health 200", latency, models)

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        return {"model": f"openai/{model_id}", "api_base": f"{self.url(backend)}/v1", "api_key": "none"}
