"""The LiteLLM proxy as a probe target: /health/readiness is cheap and needs no key.

(/health would send a real completion to every model, loading Ollama's and costing time.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmctl.backends.base import Health, Probe, timed_get

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient


def probe_gateway(client: HttpClient, url: str) -> Probe:
    response, latency, error = timed_get(client, f"{url}/health/readiness")
    if response is None:
        return Probe(Health.DOWN, error, latency)
    if response.status_code != 200:
        return Probe(Health.DOWN, f"/health/readiness answered {response.status_code}", latency)
    return Probe(Health.OK, "/health/readiness 200", latency)
