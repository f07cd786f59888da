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
from llmctl.backends.checks import Activity, Check, get_check
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient, ProbeHttp
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

    def liveness(self, client: ProbeHttp, url: str, timeout: float) -> Check:
        # /health is answered by an HTTP thread, never by the inference loop: cheap when busy.
        response, check = get_check(client, url, "/health", timeout)
        if response is not None and response.status_code == 503:
            return Check(False, "loading model (GET /health 503)", check.latency_ms, loading=True)
        return check

    def activity(self, client: ProbeHttp, url: str, timeout: float) -> Activity | None:
        """From /slots (on by default; /metrics needs --metrics): the slots processing a request,
        and for each its task and its prompt and generated token counts."""
        response, check = get_check(client, url, "/slots", timeout)
        if response is None or response.status_code != 200:
            return Activity(None, detail=check.detail)
        try:
            slots = response.json()
        except ValueError:
            slots = None
        if not isinstance(slots, list):
            return Activity(None, detail="GET /slots answered 200 without a list of slots")
        in_flight, counters = 0, []
        for slot in slots:
            if not isinstance(slot, dict) or not slot.get("is_processing"):
                continue
            in_flight += 1
            next_token = (slot.get("next_token") or [{}])[0]
            counters += [
                _int(slot.get("id")),
                _int(slot.get("id_task")),
                _int(slot.get("n_prompt_tokens_processed")),
                _int(next_token.get("n_decoded") if isinstance(next_token, dict) else None),
            ]
        return Activity(in_flight, tuple(counters), f"{in_flight} of {len(slots)} slots processing")


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1
