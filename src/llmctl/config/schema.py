"""The config file, schema version 1, as strict immutable pydantic models.

Strict means: unknown keys are errors (with a "did you mean"), values are not coerced across
types (a port is an int, not "8080"), and a loaded config cannot be changed. Checks that need
more than one field (a model pointing at a backend, fallback cycles, duplicate ports) live in
`llmctl.config.checks`, so that every problem is reported with its YAML path in one pass.

Every string that can reach a unit file or the gateway file is constrained here to what those
formats can carry safely; what is still special there (`%`, `$`, quotes) is escaped when
rendering (`llmctl.render.escape`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from llmctl.config.base import (
    ENV_NAME_PATTERN,
    MODEL_ID_PATTERN,
    NAME_PATTERN,
    Duration,
    EnvName,
    Executable,
    GpuRef,
    Host,
    ModelId,
    Name,
    NonEmptySafeStr,
    Port,
    SafeStr,
    Strict,
    is_loopback,
)
from llmctl.config.cache import GatewayCache
from llmctl.config.litellm_settings import LiteLLMPassthrough
from llmctl.kinds import Kind

__all__ = [
    "ENV_NAME_PATTERN",
    "MODEL_ID_PATTERN",
    "NAME_PATTERN",
    "Duration",
    "EnvName",
    "Executable",
    "GatewayCache",
    "GpuRef",
    "Host",
    "Kind",
    "ModelId",
    "Name",
    "NonEmptySafeStr",
    "Port",
    "SafeStr",
    "Strict",
    "is_loopback",
]

SCHEMA_VERSION = 1

API_KEY_VARIABLE = "VLLM_API_KEY"  # llmctl.backends.vllm.VllmAdapter.api_key_variable


class BackendBase(Strict):
    command: Executable = Field(
        description="Executable (absolute, ~/..., or a name found on PATH when rendering). "
        "For llama-cpp-python: the python that has llama_cpp.server installed."
    )
    host: Host = Field(default="127.0.0.1", description="Address the server binds and llmctl probes.")
    port: Port = Field(description="Port the server listens on.")
    allow_non_loopback: bool = Field(
        default=False, description="Opt-in to bind a host that is not a loopback address."
    )
    gpus: list[GpuRef] | None = Field(
        default=None,
        description="GPU indices or UUIDs; [] = CPU only; unset = every GPU the driver shows.",
    )
    environment: dict[EnvName, SafeStr] = Field(
        default_factory=dict, description="Environment of the unit; wins over what llmctl sets."
    )
    args: list[SafeStr] = Field(default_factory=list, description="Extra argv items, verbatim.")
    pinned: bool = Field(default=False, description="Never stopped to make room for a switch.")
    start_timeout: Annotated[int, Field(ge=5, le=7200)] | None = Field(
        default=None, description="Seconds a start may take (model load); default per kind."
    )
    idle_unload: Duration | None = Field(
        default=None,
        description="With gateway.on_demand: unload a model of this backend nobody asked for in "
        "this long (seconds or 90s/10m/2h); a model's own idle_unload wins.",
    )


class LlamaServerBackend(BackendBase):
    kind: Literal[Kind.LLAMA_SERVER]
    model: ModelId | None = Field(default=None, description="The model it serves now.")


class LlamaCppPythonBackend(BackendBase):
    kind: Literal[Kind.LLAMA_CPP_PYTHON]
    model: ModelId | None = Field(default=None, description="The model it serves now.")


class VllmBackend(BackendBase):
    kind: Literal[Kind.VLLM]
    model: ModelId | None = Field(default=None, description="The model it serves now.")
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="--gpu-memory-utilization: the share of each GPU vLLM claims."
    )
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None, description="--tensor-parallel-size; unset: not passed."
    )
    sleep_mode: bool = Field(default=False, description="--enable-sleep-mode (dev endpoints).")
    api_key: bool = Field(
        default=False,
        description="Start it with an API key llmctl generates (0600 file keys/NAME.env, read by the "
        "unit as VLLM_API_KEY); the gateway and llmctl's probes send it. /health needs none.",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _not_the_key_itself(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Not echoed back: it may be a real key.
            raise ValueError("takes true or false (llmctl generates the key), never the key itself")
        return value

    @model_validator(mode="after")
    def _one_source_of_the_key(self) -> VllmBackend:
        # A key written into the config would be in the unit file (environment) or the argv
        # (args), and --api-key would override the generated one. Named by place, not value.
        given = [f"environment.{API_KEY_VARIABLE}"] if API_KEY_VARIABLE in self.environment else []
        given += [f"args[{i}]" for i, arg in enumerate(self.args) if arg.split("=", 1)[0] == "--api-key"]
        if given:
            raise ValueError(
                f"a key in {' and '.join(given)} would be written into the unit file or the argv; "
                "use `api_key: true` (llmctl then generates the key and keeps it in a 0600 file)"
            )
        return self


class OllamaBackend(BackendBase):
    kind: Literal[Kind.OLLAMA]
    keep_alive: Annotated[str, StringConstraints(pattern=r"^-?[0-9]+(ms|s|m|h)?$")] | None = Field(
        default=None, description="OLLAMA_KEEP_ALIVE: a Go duration or seconds; negative = forever."
    )
    max_loaded_models: Annotated[int, Field(ge=0, le=64)] | None = Field(
        default=None, description="OLLAMA_MAX_LOADED_MODELS; unset: Ollama's default."
    )
    models_dir: NonEmptySafeStr | None = Field(default=None, description="OLLAMA_MODELS")


Backend = Annotated[
    LlamaServerBackend | LlamaCppPythonBackend | VllmBackend | OllamaBackend,
    Field(discriminator="kind"),
]


class RemoteModel(Strict):
    provider: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")] = Field(
        description="LiteLLM provider prefix, e.g. openai, anthropic, hosted_vllm."
    )
    model: NonEmptySafeStr = Field(description="The provider's name for the model.")
    api_base: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = Field(
        default=None, description="The provider's base URL; unset: LiteLLM's default for it."
    )
    api_key_env: EnvName | None = Field(
        default=None,
        description="Name of the variable holding the key, set in secrets.env (never the key).",
    )
    api_version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")] | None = (
        Field(
            default=None,
            description="The provider's API version (Azure OpenAI's api_version, e.g. 2024-10-21); "
            "unset: LiteLLM's default.",
        )
    )


class Model(Strict):
    backend: Name | None = Field(default=None, description="Local backend that can serve it.")
    source: NonEmptySafeStr | None = Field(
        default=None, description="GGUF path, Hugging Face repo id (vllm) or Ollama tag."
    )
    context: Annotated[int, Field(ge=64, le=10_000_000)] | None = Field(
        default=None,
        description="Context length in tokens (llama.cpp: --ctx-size/--n_ctx, unset: 4096; "
        "vLLM: --max-model-len).",
    )
    gpu_layers: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None,
        description="Layers offloaded to the GPU; unset: all, or 0 when the backend has gpus: [].",
    )
    remote: RemoteModel | None = Field(
        default=None, description="A provider's model, routed by the gateway (instead of backend and source)."
    )
    pinned: bool = Field(
        default=False, description="With gateway.on_demand: never evicted to load another model."
    )
    idle_unload: Duration | None = Field(
        default=None, description="With gateway.on_demand: unload it after this long without a request."
    )
    min_residency: Duration | None = Field(
        default=None,
        description="With gateway.on_demand: once loaded, stays at least this long (against thrash).",
    )
    load_timeout: Duration | None = Field(
        default=None,
        description="With gateway.on_demand: how long a request waits for it to load; default: the "
        "backend's start timeout.",
    )

    @model_validator(mode="after")
    def _local_or_remote(self) -> Model:
        if self.remote is not None:
            extra = [
                k
                for k in (
                    "backend",
                    "source",
                    "context",
                    "gpu_layers",
                    "idle_unload",
                    "min_residency",
                    "load_timeout",
                )
                if getattr(self, k)
            ]
            if self.pinned:
                extra.append("pinned")
            if extra:
                raise ValueError(f"a remote model takes no {', '.join(extra)}")
        elif self.backend is None or self.source is None:
            raise ValueError("needs backend and source (a local model) or remote (a provider)")
        return self


class Gateway(Strict):
    enabled: bool = Field(default=True, description="Run the LiteLLM gateway in front of the backends.")
    command: Executable = Field(default="litellm", description="The LiteLLM proxy executable.")
    host: Host = Field(default="127.0.0.1", description="Address the gateway's socket binds.")
    port: Port = Field(default=4000, description="Port of the gateway (held by its socket unit).")
    allow_non_loopback: bool = Field(
        default=False, description="Opt-in to bind a host that is not a loopback address."
    )
    routing_strategy: Literal[
        "simple-shuffle",
        "least-busy",
        "usage-based-routing",
        "usage-based-routing-v2",
        "latency-based-routing",
        "cost-based-routing",
    ] = Field(default="simple-shuffle", description="LiteLLM's router_settings.routing_strategy.")
    fallbacks: dict[ModelId, list[ModelId]] = Field(
        default_factory=dict,
        description="Model id -> the ids tried in order when it fails (only those routed now).",
    )
    num_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=2, description="LiteLLM's num_retries: retries of a failed request."
    )
    timeout: Annotated[int, Field(ge=1, le=86_400)] = Field(
        default=600, description="Seconds a request may take (LiteLLM's timeout and request_timeout)."
    )
    cooldown_time: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=30, description="LiteLLM's cooldown_time: seconds a failing deployment is skipped."
    )
    allowed_fails: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=3, description="LiteLLM's allowed_fails: failures in a minute before a cooldown."
    )
    on_demand: bool = Field(
        default=False,
        description="Route every local model at all times through llmctl's router, which loads a "
        "model when a request asks for it (see docs/on-demand.md).",
    )
    router_port: Port | None = Field(
        default=None, description="Loopback port of the router (on_demand); default: port + 1."
    )
    drain_timeout: Duration = Field(
        default=120.0,
        description="Seconds a server's requests in flight may take to finish before it stops.",
    )
    litellm: LiteLLMPassthrough = Field(
        default_factory=LiteLLMPassthrough,
        description="LiteLLM's own router_settings, litellm_settings and general_settings, merged "
        "into gateway.yaml; only the keys listed below, each checked.",
    )
    cache: GatewayCache | None = Field(
        default=None,
        description="A response cache in Redis, run by llmctl (llmctl-redis.service); unset: no cache.",
    )
    # Off unless asked for: the callback needs prometheus_client in LiteLLM's venv, which
    # litellm[proxy] does not install, and `up` refuses a gateway that would fail its import.
    # Defaulting to on would make `up` refuse existing configs after an upgrade; `llmctl init`
    # turns it on where LiteLLM's python has the module.
    litellm_metrics: bool = Field(
        default=False,
        description="LiteLLM's own Prometheus metrics (its prometheus callback) on the gateway's "
        "/metrics/, which asks for the gateway key; needs prometheus-client in LiteLLM's venv "
        "(see docs/metrics.md). `llmctl init` sets it where that is installed.",
    )

    @property
    def router_listen_port(self) -> int:
        return self.router_port if self.router_port is not None else self.port + 1


Seconds = Annotated[float, Field(gt=0, le=86_400)]
Threshold = Annotated[int, Field(ge=1, le=100)]


class StartupProbe(Strict):
    """While a backend loads (its unit is activating, or it says it is loading again): probed,
    never restarted. Unset keys take the default for the backend's kind."""

    interval: Seconds | None = Field(default=None, description="Seconds between probes while loading.")
    timeout: Seconds | None = Field(default=None, description="Seconds one probe may take while loading.")
    budget: Seconds | None = Field(
        default=None, description="Seconds it may stay loading; default: the backend's start_timeout."
    )


class LivenessProbe(Strict):
    """The cheap probe (/health or the like); `failure_threshold` failures in a row restart.
    Unset keys take the default for the backend's kind (llmctl supervise --print-plan)."""

    interval: Seconds | None = Field(default=None, description="Seconds between liveness probes.")
    timeout: Seconds | None = Field(default=None, description="Long enough for a busy server.")
    failure_threshold: Threshold | None = Field(
        default=None, description="Failed probes in a row that restart the backend."
    )


class DeepProbe(Strict):
    """A one-token completion, only after `idle` seconds without activity and at most once per
    `interval`: catches a server that answers /health but no longer infers. Unset keys take
    the default for the backend's kind (llmctl supervise --print-plan)."""

    enabled: bool | None = Field(default=None, description="Default: on, except for Ollama.")
    idle: Seconds | None = Field(default=None, description="Seconds without activity before a deep probe.")
    interval: Seconds | None = Field(default=None, description="Seconds at least between deep probes.")
    timeout: Seconds | None = Field(default=None, description="Seconds the one-token completion may take.")
    failure_threshold: Threshold | None = Field(
        default=None, description="Failed deep probes in a row that restart the backend."
    )


class Probes(Strict):
    startup: StartupProbe = Field(default_factory=StartupProbe, description="Over supervisor.startup.")
    liveness: LivenessProbe = Field(default_factory=LivenessProbe, description="Over supervisor.liveness.")
    deep: DeepProbe = Field(default_factory=DeepProbe, description="Over supervisor.deep.")


class Backoff(Strict):
    """Restarts of one backend are spaced initial, 2 x initial, ... up to max seconds apart;
    after `reset_after` seconds of health the next restart is immediate again."""

    initial: Seconds = Field(default=10, description="Seconds between the first two restarts.")
    max: Seconds = Field(default=300, description="Longest wait between restarts, in seconds.")
    reset_after: Seconds = Field(
        default=600, description="Seconds of health after which the next restart is immediate."
    )


class Breaker(Strict):
    """After `max_restarts` restarts within `window` seconds the backend is marked failed and
    left alone until `llmctl reset NAME`."""

    max_restarts: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="Restarts within window that open the breaker."
    )
    window: Seconds = Field(default=1800, description="Seconds over which restarts are counted.")


class Metrics(Strict):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics from the supervisor.")
    host: Host = Field(default="127.0.0.1", description="Address the metrics endpoint binds.")
    port: Port = Field(default=9464, description="Port of the metrics endpoint.")
    allow_non_loopback: bool = Field(
        default=False, description="Opt-in to bind a host that is not a loopback address."
    )


class Supervisor(Strict):
    """`llmctl supervise` (the llmctl-supervisor service): probes, restarts, events, metrics."""

    enabled: bool = Field(default=True, description="Run llmctl-supervisor.service.")
    watchdog_sec: Annotated[int, Field(ge=2, le=3600)] = Field(
        default=30, description="systemd restarts the supervisor itself if it stops pinging for this long."
    )
    startup: StartupProbe = Field(default_factory=StartupProbe, description="For every backend.")
    liveness: LivenessProbe = Field(default_factory=LivenessProbe, description="For every backend.")
    deep: DeepProbe = Field(default_factory=DeepProbe, description="For every backend.")
    backends: dict[Name, Probes] = Field(
        default_factory=dict, description="Per-backend probe settings, over the ones above."
    )
    backoff: Backoff = Field(default_factory=Backoff, description="Spacing of restarts.")
    breaker: Breaker = Field(default_factory=Breaker, description="When restarting stops.")
    metrics: Metrics = Field(default_factory=Metrics, description="The Prometheus endpoint.")

    @model_validator(mode="after")
    def _backoff_order(self) -> Supervisor:
        if self.backoff.max < self.backoff.initial:
            raise ValueError("backoff.max must be at least backoff.initial")
        return self


class Snapshots(Strict):
    keep: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=20, description="Snapshots kept besides pinned ones (oldest unpinned go first)."
    )


class Config(Strict):
    version: Literal[1] = Field(description="The config schema's version.")
    backends: dict[Name, Backend] = Field(
        default_factory=dict, description="Local servers by name; each runs as unit llmctl-NAME.service."
    )
    models: dict[ModelId, Model] = Field(
        default_factory=dict, description="Models by the id clients send (local or remote)."
    )
    gateway: Gateway = Field(default_factory=Gateway, description="The LiteLLM gateway.")
    supervisor: Supervisor = Field(default_factory=Supervisor, description="Probes, restarts, metrics.")
    snapshots: Snapshots = Field(default_factory=Snapshots, description="Snapshot retention.")

    def models_of(self, backend: str) -> dict[str, Model]:
        return {mid: m for mid, m in self.models.items() if m.backend == backend}


AnyBackend = LlamaServerBackend | LlamaCppPythonBackend | VllmBackend | OllamaBackend


def field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def backend_class(kind: Any) -> type[BackendBase] | None:
    classes: dict[Kind, type[BackendBase]] = {
        Kind.LLAMA_SERVER: LlamaServerBackend,
        Kind.LLAMA_CPP_PYTHON: LlamaCppPythonBackend,
        Kind.VLLM: VllmBackend,
        Kind.OLLAMA: OllamaBackend,
    }
    return classes.get(kind)
