"""Prometheus metrics of the supervisor, served on a loopback port (prometheus-client).

| metric | type | labels |
| --- | --- | --- |
| llmctl_backend_up | gauge: 1 when the last liveness probe passed | backend, kind |
| llmctl_backend_phase | gauge: 1 for the phase the supervisor sees | backend, phase |
| llmctl_probe_duration_seconds | histogram | backend, probe |
| llmctl_probe_failures_total | counter: failures that count | backend, probe |
| llmctl_backend_restarts_total | counter: liveness/deep/startup, crash (systemd's) | backend, reason |
| llmctl_backend_breaker_open | gauge | backend |
| llmctl_backend_backoff_streak | gauge: restarts in the current run | backend |
| llmctl_supervisor_events_total | counter | backend, event |
| llmctl_supervisor_last_round_timestamp_seconds | gauge | |
| llmctl_gpu_memory_used_bytes, llmctl_gpu_memory_total_bytes | gauge (NVML) | gpu, uuid, name |
| llmctl_backend_gpu_memory_bytes | gauge: memory of the unit's processes (NVML) | backend |
| llmctl_gpus | gauge: GPUs NVML sees (0 without a driver) | |
| llmctl_switch_duration_seconds | histogram, from switch-history.jsonl | backend, ok |
| llmctl_switches_total | counter, from switch-history.jsonl | backend, ok |
| llmctl_switch_last_duration_seconds | gauge: the last switch's total | backend |
| llmctl_switch_last_phase_seconds | gauge: the last switch's phases | backend, phase |
| process_* | the supervisor's own memory and CPU | |

Without a GPU the GPU families are exported with no samples (and llmctl_gpus 0): "cannot
tell" is not "0 bytes". The switch figures are re-read from `llmctl switch`'s history file
when it changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.supervisor import SWITCH_HISTORY_FILE

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SWITCH_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RESTART_REASONS = ("liveness", "deep", "startup", "crash")
PHASES = ("running", "loading", "starting", "systemd-restarting", "failed", "stopped", "held", "switching")
GPU_CACHE_SECONDS = 5.0


class GpuCollector:
    """GPU memory per GPU and per backend, read at scrape time (at most every few seconds)."""

    def __init__(self, read: Callable[[], Any], units: Callable[[], dict[str, str]]) -> None:
        self.read = read
        self.units = units  # unit name -> backend name
        self._cache: tuple[float, Any] | None = None
        self._lock = threading.Lock()

    def _inventory(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > GPU_CACHE_SECONDS:
                try:
                    self._cache = (now, self.read())
                except Exception:
                    self._cache = (now, None)
            return self._cache[1]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        inventory = self._inventory()
        gpus = list(getattr(inventory, "gpus", None) or [])
        labels = ["gpu", "uuid", "name"]
        used = GaugeMetricFamily("llmctl_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels)
        total = GaugeMetricFamily(
            "llmctl_gpu_memory_total_bytes", "GPU memory in total (NVML)", labels=labels
        )
        per_backend = GaugeMetricFamily(
            "llmctl_backend_gpu_memory_bytes",
            "GPU memory used by the processes of a backend's unit (NVML)",
            labels=["backend"],
        )
        count = GaugeMetricFamily("llmctl_gpus", "GPUs NVML sees (0: no driver or no GPU)")
        count.add_metric([], len(gpus))
        units = self.units()
        by_backend: dict[str, int] = dict.fromkeys(units.values(), 0) if gpus else {}
        for info in gpus:
            key = [str(info.index), str(info.uuid), str(info.name)]
            used.add_metric(key, float(info.used_bytes))
            total.add_metric(key, float(info.total_bytes))
            for proc in getattr(info, "processes", ()) or ():
                backend = units.get(getattr(proc, "unit", None) or "")
                if backend is not None and proc.used_bytes is not None:
                    by_backend[backend] += int(proc.used_bytes)
        for backend, value in sorted(by_backend.items()):
            per_backend.add_metric([backend], float(value))
        yield from (used, total, per_backend, count)


class SwitchHistoryCollector:
    """`llmctl switch` durations from switch-history.jsonl (one JSON object per switch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._seen, self._entries = None, []
                return []
            signature = (st.st_mtime_ns, st.st_size)
            if signature != self._seen:
                entries = []
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                    try:
                        item = json.loads(line)
                        float(item["total_s"])
                        str(item["backend"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    entries.append(item)
                self._seen, self._entries = signature, entries
            return self._entries

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        histogram = HistogramMetricFamily(
            "llmctl_switch_duration_seconds",
            "Duration of `llmctl switch` runs, from check to routes-in (or to the failure)",
            labels=["backend", "ok"],
        )
        switches = CounterMetricFamily("llmctl_switches", "`llmctl switch` runs", labels=["backend", "ok"])
        last = GaugeMetricFamily(
            "llmctl_switch_last_duration_seconds", "The last switch's total duration", labels=["backend"]
        )
        phases = GaugeMetricFamily(
            "llmctl_switch_last_phase_seconds",
            "The last switch's phases (check, routes-out, stop, start, verify, routes-in)",
            labels=["backend", "phase"],
        )
        groups: dict[tuple[str, str], list[float]] = {}
        latest: dict[str, dict[str, Any]] = {}
        for item in self.entries():
            key = (str(item["backend"]), "true" if item.get("ok") else "false")
            groups.setdefault(key, []).append(float(item["total_s"]))
            latest[str(item["backend"])] = item
        for key, values in sorted(groups.items()):
            buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in SWITCH_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            histogram.add_metric(list(key), buckets, sum(values))
            switches.add_metric(list(key), float(len(values)))
        for backend, item in sorted(latest.items()):
            last.add_metric([backend], float(item["total_s"]))
            for phase, seconds in (item.get("phases") or {}).items():
                if isinstance(seconds, int | float):
                    phases.add_metric([backend, str(phase)], float(seconds))
        yield from (histogram, switches, last, phases)


class Metrics:
    def __init__(
        self,
        state_dir: Path,
        *,
        gpu_read: Callable[[], Any] | None = None,
        units: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector  # noqa: PLC0415

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        self.up = Gauge(
            "llmctl_backend_up",
            "1 when the backend's last liveness probe passed, 0 when it failed or the unit is not serving",
            ["backend", "kind"],
            registry=registry,
        )
        self.phase = Gauge(
            "llmctl_backend_phase", "1 for the phase the supervisor sees", ["backend", "phase"],
            registry=registry,
        )  # fmt: skip
        self.probe_duration = Histogram(
            "llmctl_probe_duration_seconds", "Probe round-trip time", ["backend", "probe"],
            buckets=PROBE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.probe_failures = Counter(
            "llmctl_probe_failures", "Probe failures that count towards a restart", ["backend", "probe"],
            registry=registry,
        )  # fmt: skip
        self.restarts = Counter(
            "llmctl_backend_restarts",
            "Restarts: liveness, deep, startup (by the supervisor), crash (by systemd's Restart=)",
            ["backend", "reason"],
            registry=registry,
        )
        self.breaker = Gauge(
            "llmctl_backend_breaker_open", "1 while the circuit breaker holds the backend", ["backend"],
            registry=registry,
        )  # fmt: skip
        self.streak = Gauge(
            "llmctl_backend_backoff_streak", "Restarts in the current run (backoff exponent)", ["backend"],
            registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "llmctl_supervisor_events", "Supervisor events", ["backend", "event"], registry=registry
        )
        self.last_round = Gauge(
            "llmctl_supervisor_last_round_timestamp_seconds",
            "When the supervisor last looked",
            registry=registry,
        )
        self._kinds: dict[str, str] = {}
        registry.register(GpuCollector(gpu_read or _no_gpu, units or dict))
        registry.register(SwitchHistoryCollector(state_dir / SWITCH_HISTORY_FILE))

    def declare(self, backends: dict[str, str]) -> None:
        """Create every backend's series up front (backend -> kind), so they read 0, not absent."""
        for name, kind in backends.items():
            self._kinds[name] = kind
            self.up.labels(name, kind)
            self.breaker.labels(name)
            self.streak.labels(name)
            for reason in RESTART_REASONS:
                self.restarts.labels(name, reason)
            for probe in ("liveness", "deep"):
                self.probe_failures.labels(name, probe)

    def set_phase(self, backend: str, phase: str, up: bool | None) -> None:
        self.up.labels(backend, self._kinds.get(backend, "")).set(1 if up else 0)
        for candidate in PHASES:
            self.phase.labels(backend, candidate).set(1 if candidate == phase else 0)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> Any:
        """Serve /metrics on host:port in a daemon thread; raises OSError if the port is taken."""
        from prometheus_client import start_http_server  # noqa: PLC0415

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


def _no_gpu() -> Any:
    return None
