"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`).

Its flags are generated from pydantic settings (underscore names), it has no /health, and it
loads the model before binding the port: connection refused means loading, and /v1/models
listing our alias means ready. Inherited HOST/PORT variables override its flags, so the unit
unsets them.
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
from llmctl.backends.checks import Check, get_check
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient, ProbeHttp
    from llmctl.config.schema import AnyBackend, Model

DEFAULT_CONTEXT = 4096


class LlamaCppPythonAdapter(Adapter):
    kind = Kind.LLAMA_CPP_PYTHON
    unset_environment = ("HOST", "PORT", "MODEL", "MODEL_ALIAS", "CONFIG_FILE", "API_KEY")

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        argv = [executable, "-m", "llama_cpp.server", "--host", backend.host, "--port", str(backend.port)]
        if model_id is not None and model is not None and model.source is not None:
            argv += [
                "--model", model.source,
                "--model_alias", model_id,
                "--n_ctx", str(model.context or DEFAULT_CONTEXT),
                "--n_gpu_layers", str(default_gpu_layers(backend, model)),
            ]  # fmt: skip
        return Launch(
            argv=[*argv, *backend.args],
            environment=gpu_environment(backend),
            unset_environment=list(self.unset_environment),
        )

    def probe(self, client: HttpClient, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/v1/models")
        if response is None:
            # The port opens only after the model is loaded.
            return Probe(Health.DOWN, error, latency)
        if response.status_code != 200:
            return Probe(Health.DOWN, f"/v1/models answered {response.status_code}", latency)
        models = openai_model_ids(response)
        if model_id is not None and model_id not in models:
            return Probe(Health.DOWN, f"serves {list(models)}, not {model_id}", latency, models)
        return Probe(Health.OK, "/v1/models lists the model", latency, models)

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        return {"model": f"openai/{model_id}", "api_base": f"{self.url(backend)}/v1", "api_key": "none"}

    # It has no /health. FastAPI's /docs page is answered by the event loop without the model
    # lock: /v1/models waits for that lock, and with interrupt_requests on (the default) a
    # request waiting for it ends a streaming completion.
    liveness_path = "/docs"

    def liveness(self, client: ProbeHttp, url: str, timeout: float) -> Check:
        response, check = get_check(client, url, self.liveness_path, timeout)
        if response is not None and response.status_code < 500:
            # Any answer proves the event loop runs (a build without the docs page says 404).
            return Check(True, f"GET {self.liveness_path} answered {response.status_code}", check.latency_ms)
        return check
