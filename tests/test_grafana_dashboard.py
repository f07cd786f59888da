"""docs/grafana/llmctl-dashboard.json is a well-formed dashboard whose queries name only metrics
the integration test (tests/integration/test_metrics_both_sides.py) finds in a real scrape."""

from __future__ import annotations

import pytest

from tests.dashboard import (
    ALL_METRICS,
    LITELLM_METRICS,
    ROUTER_METRICS,
    SUPERVISOR_METRICS,
    load,
    metric_names,
    queries,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_is_a_prometheus_panel_with_queries() -> None:
    dashboard = load()
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert "datasource" in {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        assert panel["title"] and panel["type"] in {"stat", "timeseries", "bargauge"}, panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_every_query_names_only_metrics_the_integration_test_checks() -> None:
    named: set[str] = set()
    for title, expr in queries(load()):
        names = metric_names(expr)
        assert names, (title, expr)
        unknown = names - ALL_METRICS
        assert not unknown, f"panel {title!r} names {sorted(unknown)}, which no endpoint is checked for"
        named |= names
    # No list entry outlives its panel: the integration test checks what the dashboard uses.
    assert named == ALL_METRICS, sorted(ALL_METRICS - named)


def test_the_dashboard_shows_litellm_next_to_llmctl() -> None:
    """Requests, latency, failures and fallbacks per model from LiteLLM, beside the router's
    loads and evictions and the supervisor's restarts."""
    used = set().union(*(metric_names(expr) for _, expr in queries(load())))
    assert {
        "litellm_proxy_total_requests_metric_total",
        "litellm_request_total_latency_metric_bucket",
        "litellm_proxy_failed_requests_metric_total",
        "litellm_deployment_successful_fallbacks_total",
    } <= used
    assert {
        "llmctl_router_loads_total",
        "llmctl_router_evictions_total",
        "llmctl_backend_restarts_total",
    } <= used
    per_model = [expr for _, expr in queries(load()) if metric_names(expr) & LITELLM_METRICS]
    assert all("requested_model" in expr for expr in per_model), per_model
    assert not (SUPERVISOR_METRICS & ROUTER_METRICS) and not (ROUTER_METRICS & LITELLM_METRICS)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("llmctl_backend_up", {"llmctl_backend_up"}),
        (
            "histogram_quantile(0.95, sum by (backend, probe, le) (rate(llmctl_probe_duration_seconds_bucket[5m])))",
            {"llmctl_probe_duration_seconds_bucket"},
        ),
        ('process_resident_memory_bytes{job=~"$job"}', {"process_resident_memory_bytes"}),
        (
            "time() - llmctl_supervisor_last_round_timestamp_seconds",
            {"llmctl_supervisor_last_round_timestamp_seconds"},
        ),
        ("sum(rate(a_total[1h])) by (x) / on (x) group_left (y) b", {"a_total", "b"}),
        ('count(up{job="x"}) and bool c offset 5m', {"up", "c"}),
    ],
)
def test_metric_names_of_a_query(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
