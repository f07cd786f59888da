"""What the supervisor watches, with every setting resolved: the plan.

`build_plan(config, serving)` resolves the config (per-kind defaults, then `supervisor:`, then
`supervisor.backends.NAME`) into plain dataclasses; `Plan.to_json`/`from_json` carry it
across a process boundary. The long-running supervisor gets its plan from a short-lived
`llmctl supervise --print-plan` child, so it never imports pydantic (about 20 MiB of
resident memory it would keep for its whole life for a few milliseconds of use).

Per-kind defaults (after shared/reference/gpu-health.md §5.4):

| kind             | liveness          | deep                         |
| ---------------- | ----------------- | ---------------------------- |
| llama-server     | 5 s, 3 s, 3       | idle 60, every 300, 30 s, 2  |
| llama-cpp-python | 5 s, 3 s, 3       | idle 60, every 300, 30 s, 2  |
| vllm             | 5 s, 10 s, 3      | idle 60, every 300, 60 s, 2  |
| ollama           | 5 s, 3 s, 3       | off (it would load a model and renew its keep_alive) |

(interval, timeout, failure threshold). The startup budget is the backend's start_timeout.
The reference's 10 s / 5 s made a hung server serve again only after 30-35 s; a failure is
now confirmed by probes 1 s apart (`judge.RETRY`), so a stopped server is restarted within
interval + 3 x timeout + 2 s. A busy server is not at risk from the shorter timeout: a
timeout counts only when its process did no CPU work, or worked without progress.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmctl.config.schema import Config

PLAN_VERSION = 1


@dataclass(frozen=True)
class StartupSettings:
    interval: float = 2.0
    timeout: float = 5.0
    budget: float = 300.0


@dataclass(frozen=True)
class LivenessSettings:
    interval: float = 5.0
    timeout: float = 3.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class DeepSettings:
    enabled: bool = True
    idle: float = 60.0
    interval: float = 300.0
    timeout: float = 30.0
    failure_threshold: int = 2


@dataclass(frozen=True)
class BackendPlan:
    name: str
    unit: str
    kind: str
    url: str
    model: str | None
    startup: StartupSettings = field(default_factory=StartupSettings)
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    deep: DeepSettings = field(default_factory=DeepSettings)
    sleep_mode: bool = False  # vLLM: a sleeping server is not deep-probed


@dataclass(frozen=True)
class Policy:
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset_after: float = 600.0
    breaker_max_restarts: int = 3
    breaker_window: float = 1800.0

    def backoff(self, streak: int) -> float:
        """Seconds the next restart must wait after the last one, `streak` restarts into a run."""
        if streak <= 0:
            return 0.0
        return float(min(self.backoff_initial * 2 ** (streak - 1), self.backoff_max))


@dataclass(frozen=True)
class Plan:
    backends: tuple[BackendPlan, ...] = ()
    policy: Policy = field(default_factory=Policy)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464  # None: no metrics endpoint

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {data.get('version')!r}, expected {PLAN_VERSION}")
        backends = tuple(
            BackendPlan(
                **{k: v for k, v in b.items() if k not in ("startup", "liveness", "deep")},
                startup=StartupSettings(**b["startup"]),
                liveness=LivenessSettings(**b["liveness"]),
                deep=DeepSettings(**b["deep"]),
            )
            for b in data["backends"]
        )
        return cls(
            backends=backends,
            policy=Policy(**data["policy"]),
            metrics_host=data["metrics_host"],
            metrics_port=data["metrics_port"],
        )


KIND_DEFAULTS: dict[str, tuple[LivenessSettings, DeepSettings]] = {
    "llama-server": (LivenessSettings(), DeepSettings()),
    "llama-cpp-python": (LivenessSettings(), DeepSettings()),
    "vllm": (LivenessSettings(timeout=10.0), DeepSettings(timeout=60.0)),
    "ollama": (LivenessSettings(), DeepSettings(enabled=False)),
}


def _over(settings: Any, overrides: Any) -> Any:
    """`settings` with every key that is set (not None) in the config model `overrides`."""
    values = {k: v for k, v in overrides.model_dump().items() if v is not None}
    return replace(settings, **values)


def build_plan(config: Config, serving: dict[str, str] | None = None) -> Plan:
    from llmctl.stack import stack_units  # noqa: PLC0415 - rendering modules, only in the plan child

    sup = config.supervisor
    backends = []
    for unit in stack_units(config, serving):
        if unit.kind not in KIND_DEFAULTS:
            continue  # the gateway and the supervisor itself
        liveness, deep = KIND_DEFAULTS[unit.kind]
        startup = StartupSettings(budget=float(unit.start_timeout))
        own = sup.backends.get(unit.name)
        startup, liveness, deep = (
            _over(_over(startup, sup.startup), own.startup) if own else _over(startup, sup.startup),
            _over(_over(liveness, sup.liveness), own.liveness) if own else _over(liveness, sup.liveness),
            _over(_over(deep, sup.deep), own.deep) if own else _over(deep, sup.deep),
        )
        backends.append(
            BackendPlan(
                name=unit.name,
                unit=unit.unit,
                kind=unit.kind,
                url=unit.url,
                model=unit.model,
                startup=startup,
                liveness=liveness,
                deep=deep,
                sleep_mode=bool(getattr(config.backends[unit.name], "sleep_mode", False)),
            )
        )
    policy = Policy(
        backoff_initial=float(sup.backoff.initial),
        backoff_max=float(sup.backoff.max),
        backoff_reset_after=float(sup.backoff.reset_after),
        breaker_max_restarts=sup.breaker.max_restarts,
        breaker_window=float(sup.breaker.window),
    )
    return Plan(
        backends=tuple(backends),
        policy=policy,
        metrics_host=sup.metrics.host,
        metrics_port=sup.metrics.port if sup.metrics.enabled else None,
    )
