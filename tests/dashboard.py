"""The shipped Grafana dashboard, read the way its tests need: every query, and the metric names
each query names.

The lists below are the contract between the two tests: tests/test_grafana_dashboard.py (fast)
checks that the dashboard's queries name exactly these metrics, and
tests/integration/test_metrics_both_sides.py checks that a real scrape of each endpoint returns
every one of them. A panel cannot name a metric that no endpoint exports without one of the two
failing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana" / "llmctl-dashboard.json"

# `llmctl supervise` (supervisor.metrics, prometheus_client), on /metrics.
SUPERVISOR_METRICS = frozenset({
    "llmctl_backend_up",
    "llmctl_backend_breaker_open",
    "llmctl_probe_duration_seconds_bucket",
    "llmctl_probe_failures_total",
    "llmctl_backend_restarts_total",
    "llmctl_backend_backoff_streak",
    "llmctl_gpu_memory_used_bytes",
    "llmctl_gpu_memory_total_bytes",
    "llmctl_backend_gpu_memory_bytes",
    "llmctl_switch_duration_seconds_bucket",
    "llmctl_switch_last_phase_seconds",
    "llmctl_switches_total",
    "llmctl_supervisor_events_total",
    "llmctl_supervisor_last_round_timestamp_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
})  # fmt: skip

# llmctl's router (gateway.on_demand), on /_llmctl/metrics of gateway.router_port.
ROUTER_METRICS = frozenset({
    "llmctl_router_loads_total",
    "llmctl_router_evictions_total",
    "llmctl_router_load_seconds_total",
    "llmctl_router_load_failures_total",
    "llmctl_router_unavailable_total",
    "llmctl_router_model_loaded",
    "llmctl_router_queue_length",
    "llmctl_router_in_flight",
})  # fmt: skip

# LiteLLM's prometheus callback (gateway.litellm_metrics), on the gateway's /metrics/.
LITELLM_METRICS = frozenset({
    "litellm_proxy_total_requests_metric_total",
    "litellm_proxy_failed_requests_metric_total",
    "litellm_deployment_successful_fallbacks_total",
    "litellm_deployment_failed_fallbacks_total",
    "litellm_request_total_latency_metric_bucket",
    "litellm_total_tokens_metric_total",
})  # fmt: skip

ALL_METRICS = SUPERVISOR_METRICS | ROUTER_METRICS | LITELLM_METRICS

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_OFFSETS = re.compile(r"\boffset\s+-?[0-9a-z]+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool"})


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every identifier that is not a function or
    aggregation (followed by `(`), a keyword, a label (inside {...} or by (...)) or a range."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSETS.sub(" ", text)
    names = set()
    for match in _WORD.finditer(text):
        word = match.group()
        if word in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names
