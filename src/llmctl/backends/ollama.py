"""Ollama (`ollama serve`): configured only through environment variables.

It serves every pulled model and loads them on demand, so one backend routes many model ids.
It answers as soon as it listens (no model is loaded at start): /api/version is readiness,
/api/tags lists what is on disk and /api/ps what is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.backends.base import Adapter, Health, Launch, Probe, gpu_environment, timed_get
from llmctl.config.schema import AnyBackend, Kind, Model, OllamaBackend

if TYPE_CHECKING:
    import httpx


def _host_port(host: str, port: int) -> str:
    # No scheme on purpose: with "http://" and no port Ollama would bind port 80.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OllamaAdapter(Adapter):
    kind = Kind.OLLAMA
    default_start_timeout = 120
    serves_many = True

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        assert isinstance(backend, OllamaBackend)
        env = {"OLLAMA_HOST": _host_port(backend.host, backend.port)}
        if backend.models_dir is not None:
            env["OLLAMA_MODELS"] = backend.models_dir
        if backend.keep_alive is not None:
            env["OLLAMA_KEEP_ALIVE"] = backend.keep_alive
        if backend.max_loaded_models is not None:
            env["OLLAMA_MAX_LOADED_MODELS"] = str(backend.max_loaded_models)
        env.update(gpu_environment(backend))
        return Launch(argv=[executable, "serve", *backend.args], environment=env)

    def probe(self, client: httpx.Client, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/api/version")
        if response is None:
            return Probe(Health.DOWN, error, latency)
        if response.status_code != 200:
            return Probe(Health.DOWN, f"/api/version answered {response.status_code}", latency)
        loaded, _, _ = timed_get(client, f"{url}/api/ps")
        models: tuple[str, ...] = ()
        if loaded is not None and loaded.status_code == 200:
            try:
                models = tuple(str(m["name"]) for m in loaded.json().get("models") or [])
            except (ValueError, AttributeError, KeyError, TypeError):
                models = ()
        return Probe(Health.OK, "/api/version 200", latency, models)

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        # ollama_chat/ talks to /api/chat; its api_base has no /v1.
        return {"model": f"ollama_chat/{model.source}", "api_base": self.url(backend)}
