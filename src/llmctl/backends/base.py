"""What every backend kind supplies: its argv, environment, readiness and model listing.

An adapter is a small stateless object; `llmctl.backends.adapter_for(kind)` returns it. The
unit renderer asks it how to start the server, `wait-ready`, `status` and the supervisor ask
it whether the server serves, the gateway renderer asks it how LiteLLM should address it, and
the planner (`llmctl.planner.live`), `status` and `switch` ask it what the server holds in
memory: `is_sleeping`, `loaded_models` and `memory_facts` (idle, asleep, per-model sizes).
HTTP goes through a client the caller passes in (`llmctl.backends.http.HttpClient`: our
stdlib `LoopbackClient` from `probe_client`, or an httpx client with a mock transport in tests).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from llmctl.backends.checks import Activity, Check, get_check, one_token_completion
from llmctl.kinds import Kind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmctl.backends.http import HttpClient, HttpResponse, LoopbackClient, ProbeHttp
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
class LoadedModel:
    """A model a server holds in memory now (Ollama: an entry of /api/ps)."""

    name: str
    size: int = 0  # bytes in memory, RAM and VRAM together (0: the kind does not say)
    size_vram: int = 0  # bytes of it in VRAM (`ollama ps` shows size_vram/size as "% GPU")
    expires_at: datetime | None = None  # when keep_alive unloads it; far in the future when pinned


@dataclass(frozen=True)
class MemoryFacts:
    """What a running server says about the memory it holds, for planning (best effort)."""

    idle: bool | None = None  # no request in flight (None: the kind cannot tell, or no answer)
    asleep: bool = False  # put to sleep (vLLM's sleep mode): it holds only a residual
    # Per-model sizes, from a kind whose one process holds several models (Ollama's /api/ps):
    # the planner splits the process's GPU memory by them.
    loaded: tuple[LoadedModel, ...] = ()


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


def timed_get(client: HttpClient, url: str) -> tuple[HttpResponse | None, float, str]:
    """GET url; return (response or None, latency ms, error text)."""
    from llmctl.backends.http import short_error, transport_errors  # noqa: PLC0415

    start = time.monotonic()
    try:
        response = client.get(url)
    except transport_errors() as exc:
        return None, (time.monotonic() - start) * 1000, short_error(exc)
    return response, (time.monotonic() - start) * 1000, ""


def openai_model_ids(response: HttpResponse) -> tuple[str, ...]:
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

    def probe(self, client: HttpClient, url: str, model_id: str | None) -> Probe:
        raise NotImplementedError

    def litellm_params(self, backend: AnyBackend, model_id: str, model: Model) -> dict[str, Any]:
        """The litellm_params of a model_list entry that routes `model_id` to this backend."""
        raise NotImplementedError

    # -- what the supervisor asks of a running server (llmctl.backends.checks) ----------------

    # The cheap path the supervisor polls: answered without waiting for the model.
    liveness_path: ClassVar[str] = "/health"

    def liveness(self, client: ProbeHttp, url: str, timeout: float) -> Check:
        """Alive: 200 on `liveness_path`."""
        return get_check(client, url, self.liveness_path, timeout)[1]

    def deep_probe(
        self, client: ProbeHttp, url: str, model: str | None, timeout: float, *, sleep_mode: bool = False
    ) -> Check:
        """Still infers: a one-token completion."""
        return one_token_completion(client, url, model, timeout)

    def activity(self, client: ProbeHttp, url: str, timeout: float) -> Activity | None:
        """Its work counters now, or None for a kind that has none."""
        return None

    # -- what a running server holds (planning, status, switch) ---------------------------------

    def is_sleeping(self, client: HttpClient, url: str) -> bool | None:
        """Whether the server sleeps now (its memory released until woken), None when it cannot
        tell. Kinds without a sleep mode never sleep."""
        return False

    def loaded_models(self, client: HttpClient, url: str) -> list[LoadedModel]:
        """The models the server holds now: what /v1/models lists (one-model servers list the
        one they loaded; sizes unknown). Raises LlmctlError when it does not answer."""
        from llmctl.errors import LlmctlError  # noqa: PLC0415

        response, _, error = timed_get(client, f"{url}/v1/models")
        if response is None or response.status_code != 200:
            what = error or f"/v1/models answered {response and response.status_code}"
            raise LlmctlError(f"{self.kind.value} at {url} did not list its models: {what}")
        return [LoadedModel(name) for name in openai_model_ids(response)]

    def memory_facts(
        self, client: ProbeHttp, url: str, timeout: float, *, sleep_mode: bool = False
    ) -> MemoryFacts:
        """Idle from the work counters (`activity`); asleep asked only with `sleep_mode` (a
        server started without it has no such state)."""
        activity = self.activity(client, url, timeout)
        idle = None if activity is None or activity.in_flight is None else activity.in_flight == 0
        return MemoryFacts(idle=idle, asleep=sleep_mode and self.is_sleeping(client, url) is True)

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


def probe_client(
    timeout: float, *, api_keys: Mapping[str, str] | None = None, keep_alive: bool = True
) -> LoopbackClient:
    """An HTTP client for probing local servers (plain HTTP, no proxies: see backends/http.py).

    A server started with an API key gets `Authorization: Bearer KEY`: the keys are
    `api_keys` ({base URL: key}) if given, else those of the installed units, read at the
    first request (`installed_keys`, which needs no pydantic).
    """
    from llmctl.backends.http import KeyRing, LoopbackClient  # noqa: PLC0415

    keys = KeyRing(api_keys) if api_keys is not None else KeyRing(load=lambda: installed_keys())  # noqa: PLW0108 - looked up per call: tests replace it
    return LoopbackClient(timeout, keys=keys, keep_alive=keep_alive)


def installed_keys() -> dict[str, str]:
    """{base URL: key} of the installed backend units started with a key, for this user."""
    from llmctl.paths import Paths  # noqa: PLC0415
    from llmctl.secrets import installed_backend_keys  # noqa: PLC0415

    return installed_backend_keys(Paths.from_env())
