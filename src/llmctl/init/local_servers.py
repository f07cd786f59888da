"""What runs on this machine's loopback ports, as `llmctl init --from-litellm` asks it.

A LiteLLM entry names a local server only by its api_base; which kind of server it is and
which model file it loaded, only the server itself can say: `/v1/models` (its `owned_by`:
llama-server "llamacpp", llama-cpp-python "me", vLLM "vllm", Ollama "library"; ids and vLLM's
`root`, the repo id or path it loaded) and llama-server's `/props` (`model_path`). Failing that,
the port's usual owner, as users run them behind LiteLLM, or the provider prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PORT_KINDS = {11434: "ollama", 8000: "llama-cpp-python", 8080: "llama-server", 8001: "vllm"}
OWNER_KINDS = {"llamacpp": "llama-server", "me": "llama-cpp-python", "vllm": "vllm", "library": "ollama"}
# Provider prefixes that name a local server kind by themselves.
PROVIDER_KINDS = {"ollama": "ollama", "ollama_chat": "ollama", "hosted_vllm": "vllm"}


@dataclass(frozen=True)
class Served:
    """What a local server said about itself: the owner of its models and their names/paths."""

    kind: str | None  # from owned_by; None when it did not say
    models: tuple[str, ...]  # /v1/models ids and roots, llama-server's /props model_path


Probe = Callable[[int], Served | None]


def no_probe(port: int) -> Served | None:
    return None


def probe_port(port: int, timeout: float = 1.0) -> Served | None:
    """Ask what answers on 127.0.0.1:PORT: /v1/models (its owner and model names or paths),
    and llama-server's /props (the GGUF it loaded). None when nothing answers there."""
    from llmctl.backends.http import HttpError, LoopbackClient  # noqa: PLC0415

    base = f"http://127.0.0.1:{port}"
    names: list[str] = []
    kind = None
    with LoopbackClient(timeout) as client:
        try:
            response = client.get(base + "/v1/models")
        except HttpError:
            return None
        try:
            data = response.json() if response.status_code == 200 else {}
        except ValueError:
            data = {}
        for model in data.get("data", []) if isinstance(data, dict) else []:
            if not isinstance(model, dict):
                continue
            kind = kind or OWNER_KINDS.get(str(model.get("owned_by")))
            names += [str(model[k]) for k in ("id", "root") if isinstance(model.get(k), str)]
        if kind in (None, "llama-server"):
            try:
                props = client.get(base + "/props")
                path = props.json().get("model_path") if props.status_code == 200 else None
            except (HttpError, ValueError, AttributeError):
                path = None
            if isinstance(path, str) and path:
                kind = kind or "llama-server"
                names.append(path)
    return Served(kind, tuple(dict.fromkeys(names)))
