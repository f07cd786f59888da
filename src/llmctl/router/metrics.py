"""The router's Prometheus metrics, rendered by hand (the exposition format is four lines of
rules; prometheus_client would add a registry and a thread for what fits in a dict)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmctl.router.scheduler import Event, Scheduler


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class RouterMetrics:
    requests: Counter[str] = field(default_factory=Counter)  # admitted, per model
    unavailable_total: Counter[str] = field(default_factory=Counter)  # answered 503, per model
    queue_wait_sum: dict[str, float] = field(default_factory=dict)
    loads: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # backend, model, reason
    load_seconds_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    load_failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    evictions: Counter[tuple[str, str]] = field(default_factory=Counter)  # backend, reason

    def admitted(self, model: str, waited: float) -> None:
        self.requests[model] += 1
        self.queue_wait_sum[model] = self.queue_wait_sum.get(model, 0.0) + waited

    def unavailable(self, model: str) -> None:
        self.unavailable_total[model] += 1

    def event(self, event: Event) -> None:
        model = event.model or ""
        if event.kind == "load":
            self.loads[(event.backend, model, event.detail)] += 1
            key = (event.backend, model)
            self.load_seconds_sum[key] = self.load_seconds_sum.get(key, 0.0) + (event.seconds or 0.0)
        elif event.kind == "load-failed":
            self.load_failures[(event.backend, model)] += 1
        elif event.kind == "evict":
            self.evictions[(event.backend, event.detail.split(":", 1)[0])] += 1
        elif event.kind == "idle-unload":
            self.evictions[(event.backend, "idle")] += 1

    def render(self, scheduler: Scheduler) -> str:
        out: list[str] = []

        def family(name: str, kind: str, text: str, rows: list[tuple[str, float]]) -> None:
            out.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
            out.extend(f"{name}{labels} {value:g}" for labels, value in rows)

        family(
            "llmctl_router_requests_total",
            "counter",
            "Requests admitted to a model.",
            [(_labels(model=m), n) for m, n in sorted(self.requests.items())],
        )
        family(
            "llmctl_router_queue_wait_seconds_total",
            "counter",
            "Seconds requests waited for their model.",
            [(_labels(model=m), s) for m, s in sorted(self.queue_wait_sum.items())],
        )
        family(
            "llmctl_router_unavailable_total",
            "counter",
            "Requests answered 503 (LiteLLM tries the model's fallbacks).",
            [(_labels(model=m), n) for m, n in sorted(self.unavailable_total.items())],
        )
        family(
            "llmctl_router_loads_total",
            "counter",
            "Models loaded, by reason (demand, switch).",
            [(_labels(backend=b, model=m, reason=r), n) for (b, m, r), n in sorted(self.loads.items())],
        )
        family(
            "llmctl_router_load_seconds_total",
            "counter",
            "Seconds spent loading models.",
            [(_labels(backend=b, model=m), s) for (b, m), s in sorted(self.load_seconds_sum.items())],
        )
        family(
            "llmctl_router_load_failures_total",
            "counter",
            "Loads that failed.",
            [(_labels(backend=b, model=m), n) for (b, m), n in sorted(self.load_failures.items())],
        )
        family(
            "llmctl_router_evictions_total",
            "counter",
            "Models unloaded, by reason (demand, idle).",
            [(_labels(backend=b, reason=r), n) for (b, r), n in sorted(self.evictions.items())],
        )
        state = scheduler.snapshot()
        rows_loaded, rows_queue, rows_flight = [], [], []
        for backend, info in state.items():
            assert isinstance(info, dict)
            for model in info["available"]:
                rows_loaded.append((_labels(backend=backend, model=model), float(info["loaded"] == model)))
            rows_queue.append((_labels(backend=backend), float(info["queue"])))
            rows_flight.append((_labels(backend=backend), float(sum(info["in_flight"].values()))))
        family(
            "llmctl_router_model_loaded", "gauge", "1 when the model is loaded on its backend.", rows_loaded
        )
        family(
            "llmctl_router_queue_length", "gauge", "Requests waiting for a model of the backend.", rows_queue
        )
        family("llmctl_router_in_flight", "gauge", "Requests being answered by the backend.", rows_flight)
        return "\n".join(out) + "\n"
