"""What every backend kind supplies: its argv, environment, readiness and model listing.

An adapter is a small stateless object; `llmctl.backends.adapter_for(kind)` returns it. The
unit renderer asks it how to start the server, `wait-ready`, `status` and the supervisor ask
it whether the server serves, and the gateway renderer asks it how LiteLLM should address it.
HTTP goes through an `httpx.Client` the caller passes in, so nothing here imports httpx at
start-up and tests can hand in a client with a mock transport.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from llmctl.kinds import Kind

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

    from llmctl.config.schema import AnyBackend, Model


class Health(enum.StrEnum):
    OK = "ok"  # serves the model it should
    LOADING = "loading"  # up, but still loading (or serving something else for now)
    DOWN = "down"  # nothing answers, or it answers with an error
    UNKNOWN = "unknown"  # not probed (stopped, or no way to tell)


@dataclass(frozen=True)
class Probe:
    health: Health
    detail: str
    latency_ms: float | None = None
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Launch:
    """How to start one backend: argv (argv[0] absolute), environment, systemd policy."""

    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    unset_environment: list[str] = field(default_factory=list)


def base_url(host: str, port: int) -> str:
    # A wildcard bind is reachable on loopback; probing 0.0.0.0 works on Linux but reads oddly.
    if host in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def timed_get(client: httpx.Client, url: str) -> tuple[httpx.Response | None, float, str]:
    """GET url; return (response or None, latency ms, error text)."""
    import httpx  # noqa: PLC0415 - keep httpx off the CLI start-up path

    start = time.monotonic()
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return None, (time.monotonic() - start) * 1000, _short_error(exc)
    return response, (time.monotonic() - start) * 1000, ""


def _short_error(exc: Exception) -> str:
    import httpx  # noqa: PLC0415

    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def openai_model_ids(response: httpx.Response) -> tuple[str, ...]:
    try:
        data = response.json().get("data") or []
        return tuple(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)
    except (ValueError, AttributeError, KeyError):
        return ()


class Adapter:
    kind: ClassVar[Kind]
    # Seconds a start may take by default: model loads dominate.
    default_start_timeout: ClassVar[int] = 300
    # systemd Restart=; vLLM overrides it (it can exit 0 after its engine died).
    restart: ClassVar[str] = "on-failure"
    # Variables that would silently override the argv we render (llama-cpp-python, LiteLLM).
    unset_environment: ClassVar[tuple[str, ...]] = ()
    serves_many: ClassVar[bool] = False  # Ollama: every model assigned to it, loaded on demand
    # The variable the server reads its API key from, for kinds llmctl can start with a key
    # (`api_key: true`); the unit gets it from the key file through EnvironmentFile=.
    api_key_variable: ClassVar[str | None] = None

    def launch(
        self, backend: AnyBackend, executable: str, model_id: str | None, model: Model | None
    ) -> Launch:
        raise NotImplementedError

    def probe(self, client: httpx.Client, url: str, model_id: str | None) -> Probe:
        raise NotImplementedError

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        """The litellm_params of a model_list entry that routes `model_id` to this backend."""
        raise NotImplementedError

    def url(self, backend: AnyBackend) -> str:
        return base_url(backend.host, backend.port)


def gpu_environment(backend: AnyBackend) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES from `gpus`: unset = all; [] = none; UUIDs kept as given."""
    if backend.gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in backend.gpus)}


def default_gpu_layers(backend: AnyBackend, model: Model | None) -> int:
    if model is not None and model.gpu_layers is not None:
        return model.gpu_layers
    # No GPUs named as [] means CPU only; otherwise offload everything that fits.
    return 0 if backend.gpus == [] else 999


def probe_client(timeout: float, *, api_keys: Mapping[str, str] | None = None) -> httpx.Client:
    """An HTTP client for probing local servers.

    Probes speak plain HTTP to addresses from the config, so no certificate is ever checked:
    verify=False only skips loading the CA bundle (~40 ms per command). trust_env=False keeps
    an HTTP(S)_PROXY in the environment from routing loopback probes through a proxy.

    A server started with an API key gets `Authorization: Bearer KEY`: the keys are
    `api_keys` ({base URL: key}) if given, else those of the installed units, read at the
    first request (`llmctl.backends.auth`).
    """
    import httpx  # noqa: PLC0415

    from llmctl.backends.auth import BackendKeys, installed_keys  # noqa: PLC0415 - imports httpx

    auth = BackendKeys(api_keys) if api_keys is not None else BackendKeys(load=installed_keys)
    return httpx.Client(timeout=timeout, trust_env=False, verify=False, auth=auth)  # noqa: S501
