"""Ollama (`ollama serve`): configured only through environment variables.

It serves every pulled model and loads them on demand, so one backend routes many model ids.
It answers as soon as it listens (no model is loaded at start): /api/version is readiness,
/api/tags lists what is on disk and /api/ps what is loaded. Models are loaded and unloaded
through /api/generate with a `keep_alive`; see `load` and `unload`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmctl.backends.base import (
    Adapter,
    Health,
    Launch,
    LoadedModel,
    MemoryFacts,
    Probe,
    gpu_environment,
    timed_get,
)
from llmctl.backends.checks import PROMPT, Check, get_check, judge_answer, timed_request
from llmctl.errors import ExitCode, LlmctlError
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient, HttpResponse, ProbeHttp
    from llmctl.config.schema import AnyBackend, Model

FIRST_POLL = 0.05
MAX_POLL = 0.5


def _host_port(host: str, port: int) -> str:
    # No scheme on purpose: with "http://" and no port Ollama would bind port 80.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_loaded(response: HttpResponse) -> list[LoadedModel]:
    out = []
    try:
        for item in response.json().get("models") or []:
            try:
                expires: datetime | None = datetime.fromisoformat(str(item.get("expires_at")))
            except ValueError:
                expires = None
            out.append(
                LoadedModel(
                    name=str(item["name"]),
                    size=int(item.get("size") or 0),
                    size_vram=int(item.get("size_vram") or 0),
                    expires_at=expires,
                )
            )
    except (ValueError, AttributeError, KeyError, TypeError):
        return []
    return out


def _failed(url: str, what: str, response: HttpResponse) -> str:
    # Ollama reports failures as {"error": "..."}.
    try:
        text = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or "(no body)"
    return f"Ollama at {url} {what}: HTTP {response.status_code}: {text}"


def _post(
    client: HttpClient, url: str, path: str, body: dict[str, Any], timeout: float | None = None
) -> HttpResponse:
    from llmctl.backends.http import transport_errors  # noqa: PLC0415

    try:
        if timeout is None:
            return client.post(f"{url}{path}", json=body)
        return client.post(f"{url}{path}", json=body, timeout=timeout)
    except transport_errors() as exc:
        raise LlmctlError(
            f"Ollama at {url} did not answer: {type(exc).__name__}: {exc}",
            hint="Is the backend running? llmctl status",
        ) from exc


def _keep_alive_json(keep_alive: str | int) -> str | int:
    # A JSON string goes through Go's time.ParseDuration, which rejects a bare number ("300",
    # "-1": missing unit), while OLLAMA_KEEP_ALIVE and the config accept seconds: send those
    # as a JSON number, which Ollama reads as seconds (negative = forever).
    if isinstance(keep_alive, str) and re.fullmatch(r"-?[0-9]+", keep_alive):
        return int(keep_alive)
    return keep_alive


def canonical(name: str) -> str:
    # Ollama names a model without a tag NAME:latest (that is how /api/ps lists it).
    last = name.rsplit("/", 1)[-1]
    return (name if ":" in last else f"{name}:latest").casefold()


def loaded_models(client: HttpClient, url: str) -> list[LoadedModel]:
    response, _, error = timed_get(client, f"{url}/api/ps")
    if response is None:
        raise LlmctlError(f"Ollama at {url} did not answer: {error}", hint="Is the backend running?")
    if response.status_code != 200:
        raise LlmctlError(_failed(url, "could not list loaded models", response))
    return _parse_loaded(response)


def load(
    client: HttpClient, url: str, model: str, keep_alive: str | int | None, *, timeout: float | None = None
) -> None:
    """Load `model` and keep it for `keep_alive` (None: OLLAMA_KEEP_ALIVE, 5 min by default).

    Returns once the model is loaded; `timeout` overrides the client's (loads take minutes).
    """
    if keep_alive is not None and re.fullmatch(r"0+(ms|s|m|h)?", str(keep_alive)):
        raise ValueError("keep_alive 0 unloads the model: call unload()")
    body: dict[str, Any] = {"model": model, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = _keep_alive_json(keep_alive)
    response = _post(client, url, "/api/generate", body, timeout)
    if response.status_code == 400 and "does not support generate" in response.text:
        # An embedding model has no completion capability, so /api/generate refuses it; an
        # empty /api/embeddings request loads it instead (EmbeddingsHandler in routes.go).
        response = _post(client, url, "/api/embeddings", body, timeout)
    if response.status_code == 404:
        raise LlmctlError(
            _failed(url, f"does not have model {model!r}", response),
            hint=f"Pull it first: OLLAMA_HOST={url.removeprefix('http://')} ollama pull {model}",
        )
    if response.status_code != 200:
        raise LlmctlError(_failed(url, f"could not load {model!r}", response))


def unload(
    client: HttpClient,
    url: str,
    model: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Unload `model` and return once /api/ps no longer lists it (its memory is free)."""
    # keep_alive 0 only marks the runner expired and answers "unload" at once; the runner is
    # torn down asynchronously, so the answer does not mean the VRAM is free yet.
    # It is checked before capabilities, so it unloads embedding models too.
    response = _post(client, url, "/api/generate", {"model": model, "keep_alive": 0, "stream": False})
    # 404: Ollama does not know the name, so nothing by that name can be loaded either.
    if response.status_code not in (200, 404):
        raise LlmctlError(_failed(url, f"could not unload {model!r}", response))
    wanted = canonical(model)
    deadline = clock() + timeout
    interval = FIRST_POLL
    while any(canonical(m.name) == wanted for m in loaded_models(client, url)):
        if clock() >= deadline:
            raise LlmctlError(
                f"Ollama at {url} still has {model!r} loaded {timeout:g} s after it was asked to unload it",
                hint="Its runner may be stuck: see `ollama ps` and the backend's journal; "
                "restarting the backend frees its memory.",
            )
        sleep(min(interval, max(deadline - clock(), 0.0)))
        interval = min(interval * 2, MAX_POLL)


class OllamaAdapter(Adapter):
    kind = Kind.OLLAMA
    default_start_timeout = 120
    serves_many = True

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        from llmctl.config.schema import OllamaBackend  # noqa: PLC0415 - pydantic is loaded when rendering

        assert isinstance(backend, OllamaBackend)
        if backend.args:
            # `ollama serve` is cobra.ExactArgs(0) with no flags: any argv item fails the start.
            raise LlmctlError(
                f"an ollama backend takes no args (got {backend.args}): `ollama serve` accepts none",
                hint="Configure Ollama through `environment:` (OLLAMA_* variables) instead.",
                exit_code=ExitCode.USAGE,
            )
        env = {"OLLAMA_HOST": _host_port(backend.host, backend.port)}
        if backend.models_dir is not None:
            env["OLLAMA_MODELS"] = backend.models_dir
        if backend.keep_alive is not None:
            env["OLLAMA_KEEP_ALIVE"] = backend.keep_alive
        if backend.max_loaded_models is not None:
            env["OLLAMA_MAX_LOADED_MODELS"] = str(backend.max_loaded_models)
        env.update(gpu_environment(backend))
        return Launch(argv=[executable, "serve"], environment=env)

    def probe(self, client: HttpClient, url: str, model_id: str | None) -> Probe:
        response, latency, error = timed_get(client, f"{url}/api/version")
        if response is None:
            return Probe(Health.DOWN, error, latency)
        if response.status_code == 403:
            # Bound to loopback, Ollama refuses requests whose Host header is not local.
            return Probe(Health.DOWN, "/api/version answered 403 (Host header not allowed)", latency)
        if response.status_code != 200:
            return Probe(Health.DOWN, f"/api/version answered {response.status_code}", latency)
        loaded, _, _ = timed_get(client, f"{url}/api/ps")
        models: tuple[str, ...] = ()
        if loaded is not None and loaded.status_code == 200:
            models = tuple(m.name for m in _parse_loaded(loaded))
        return Probe(Health.OK, "/api/version 200", latency, models)

    def loaded_models(self, client: HttpClient, url: str) -> list[LoadedModel]:
        """/api/ps: every model loaded now, with its size in RAM and VRAM."""
        return loaded_models(client, url)

    def memory_facts(
        self, client: ProbeHttp, url: str, timeout: float, *, sleep_mode: bool = False
    ) -> MemoryFacts:
        """The loaded models' sizes (its one process holds them all); idle it cannot tell."""
        try:
            return MemoryFacts(loaded=tuple(loaded_models(client, url)))
        except LlmctlError:
            return MemoryFacts()

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        # ollama_chat/ talks to /api/chat; its api_base has no /v1.
        return {"model": f"ollama_chat/{model.source}", "api_base": self.url(backend)}

    liveness_path = "/api/version"

    def deep_probe(
        self, client: ProbeHttp, url: str, model: str | None, timeout: float, *, sleep_mode: bool = False
    ) -> Check:
        """A one-token generate on a model it has loaded already: none loaded, nothing to test
        (loading one would cost memory and renew its keep_alive)."""
        response, check = get_check(client, url, "/api/ps", min(timeout, 5.0))
        if response is None or response.status_code != 200:
            return check
        loaded = [m.name for m in _parse_loaded(response)]
        if not loaded:
            return Check(True, "no model loaded: nothing to test", skipped=True)
        body = {"model": loaded[0], "prompt": PROMPT, "stream": False, "options": {"num_predict": 1}}
        answer, latency, error, timed_out = timed_request(
            client, "POST", url + "/api/generate", timeout, body
        )
        what = f"one-token generate on {loaded[0]}"
        return judge_answer(answer, latency, error, timed_out, what, lambda d: "response" in d)
