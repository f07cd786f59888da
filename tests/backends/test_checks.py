"""What each kind's adapter answers the supervisor (liveness, deep probe, work counters), and the
supervisor's progress probe over them, against real sockets and the one probe client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.backends.checks import Activity, prometheus_values
from llmctl.backends.http import LoopbackClient
from llmctl.kinds import Kind
from llmctl.supervisor import probes
from llmctl.supervisor.plan import BackendPlan
from tests.backends.standins import OllamaStandIn, Reply, Request, StandIn, VllmStandIn

Route = Callable[[Request], Reply]


class Scripted(StandIn):
    """Answers each path with what the test put in `routes` (404 otherwise)."""

    def __init__(self, routes: dict[str, Route]) -> None:
        super().__init__()
        self.routes = routes

    def handle(self, request: Request) -> Reply:
        route = self.routes.get(request.path)
        return route(request) if route else Reply.json(404, {"detail": "Not Found"})


def slots(*processing: tuple[int, int, int]) -> Reply:
    """llama-server's GET /slots: (id_task, prompt tokens processed, tokens decoded) per busy slot,
    plus one idle slot."""
    busy = [
        {
            "id": i, "n_ctx": 512, "speculative": False, "is_processing": True, "id_task": task,
            "n_prompt_tokens": 9, "n_prompt_tokens_processed": prompt,
            "next_token": [{"has_next_token": True, "n_remain": 10, "n_decoded": decoded}],
        }
        for i, (task, prompt, decoded) in enumerate(processing)
    ]  # fmt: skip
    idle = {"id": len(busy), "n_ctx": 512, "speculative": False, "is_processing": False}
    return Reply.json(200, [*busy, idle])


@pytest.fixture
def client() -> Iterator[LoopbackClient]:
    with probe_client(5.0, api_keys={}, keep_alive=False) as c:
        yield c


def test_llama_server_liveness_tells_alive_loading_refused_and_timed_out(client: LoopbackClient) -> None:
    adapter = adapter_for(Kind.LLAMA_SERVER)
    status = {"code": 200}
    with Scripted({"/health": lambda r: Reply.json(status["code"], {"status": "ok"})}) as server:
        assert adapter.liveness(client, server.url, 2).ok
        status["code"] = 503
        loading = adapter.liveness(client, server.url, 2)
        assert (loading.ok, loading.loading) == (False, True)
    refused = adapter.liveness(client, server.url, 2)
    assert (refused.ok, refused.timed_out) == (False, False) and "connection refused" in refused.detail

    def slow(_: Request) -> Reply:
        time.sleep(1.0)
        return Reply.json(200, {"status": "ok"})

    with Scripted({"/health": slow}) as server:
        late = adapter.liveness(client, server.url, 0.2)
    assert (late.ok, late.timed_out) == (False, True) and "timed out after 0.2 s" in late.detail


def test_llama_cpp_python_liveness_asks_a_path_it_has_without_the_model_lock(client: LoopbackClient) -> None:
    adapter = adapter_for(Kind.LLAMA_CPP_PYTHON)
    with Scripted({"/docs": lambda r: Reply(200, b"<html>", "text/html")}) as server:
        assert adapter.liveness(client, server.url, 2).ok
        assert [r.path for r in server.requests] == ["/docs"]  # never /health (a 404 a probe)
    with Scripted({"/docs": lambda r: Reply(500, b"boom")}) as server:
        assert not adapter.liveness(client, server.url, 2).ok


def test_llama_server_activity_reads_the_busy_slots(client: LoopbackClient) -> None:
    adapter = adapter_for(Kind.LLAMA_SERVER)
    answer = {"reply": slots((7, 9, 3), (8, 9, 1))}
    with Scripted({"/slots": lambda r: answer["reply"]}) as server:
        first = adapter.activity(client, server.url, 2)
        assert first is not None and first.in_flight == 2 and "2 of 3 slots" in first.detail
        answer["reply"] = slots((7, 9, 4), (8, 9, 1))
        second = adapter.activity(client, server.url, 2)
        assert second is not None and second.counters != first.counters
        answer["reply"] = Reply.json(501, {"error": {"code": 501}})
        off = adapter.activity(client, server.url, 2)
    assert off == Activity(None, detail="GET /slots answered 501")


def backend(kind: str, url: str, **extra: Any) -> BackendPlan:
    return BackendPlan("b", "llmctl-b.service", kind, url, "m", **extra)


def test_progress_moved_flat_idle_and_unreadable(client: LoopbackClient) -> None:
    turns: list[Reply] = []
    with Scripted({"/slots": lambda r: turns.pop(0)}) as server:
        b = backend("llama-server", server.url)
        turns[:] = [slots((7, 9, 3)), slots((7, 9, 5))]
        moved = probes.progress(client, b, 2, gap=0.01)
        assert moved.ok and not moved.skipped and "moved" in moved.detail
        turns[:] = [slots((7, 9, 3)), slots((7, 9, 3))]
        flat = probes.progress(client, b, 2, gap=0.01)
        assert not flat.ok and "did not move" in flat.detail and "requests in flight" in flat.detail
        turns[:] = [slots(), slots()]
        idle = probes.progress(client, b, 2, gap=0.01)
        assert not idle.ok and "no request in flight" in idle.detail
        turns[:] = [slots((7, 9, 3)), Reply(500, b"")]
        unreadable = probes.progress(client, b, 2, gap=0.01)
        assert unreadable.ok and unreadable.skipped
    none = probes.progress(client, backend("llama-cpp-python", server.url), 2, gap=0.01)
    assert none.skipped and "no work counters" in none.detail


def test_vllm_counters_from_metrics_and_a_dead_engine(client: LoopbackClient) -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
        'vllm:generation_tokens_total{engine="0",model_name="m"} 1200.0\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 5000.0\n'
    )
    adapter = adapter_for(Kind.VLLM)
    with Scripted({"/metrics": lambda r: Reply(200, text.encode(), "text/plain")}) as server:
        activity = adapter.activity(client, server.url, 2)
    assert activity == Activity(3, (1200, 5000), "3 requests running")
    with VllmStandIn("m") as vllm:
        assert adapter.liveness(client, vllm.url, 2).ok
        vllm.kill_engine()
        dead = adapter.liveness(client, vllm.url, 2)
    assert not dead.ok and "engine dead" in dead.detail


def test_deep_probes_per_kind(client: LoopbackClient) -> None:
    with VllmStandIn("m", dev_mode=True) as vllm:
        adapter = adapter_for(Kind.VLLM)
        assert adapter.deep_probe(client, vllm.url, "m", 5, sleep_mode=True).detail.startswith(
            "the one-token completion answered"
        )
        vllm.sleep_level = 1
        asleep = adapter.deep_probe(client, vllm.url, "m", 5, sleep_mode=True)
        assert asleep.skipped and "asleep" in asleep.detail
    with OllamaStandIn([]) as ollama:
        nothing = adapter_for(Kind.OLLAMA).deep_probe(client, ollama.url, None, 5)
    assert nothing.skipped and "no model loaded" in nothing.detail
    with Scripted({"/v1/completions": lambda r: Reply.json(401, {"error": "no key"})}) as server:
        keyed = adapter_for(Kind.LLAMA_SERVER).deep_probe(client, server.url, "m", 5)
    assert keyed.ok and keyed.skipped


def test_prometheus_values_sum_label_sets_and_read_labels_with_spaces() -> None:
    text = 'a_total{x="1"} 2\na_total{x="two words"} 3.5\nb 7 1700000000000\n# a_total 100\nc{broken 1\n'
    assert prometheus_values(text, ["a_total", "b", "c", "d"]) == {"a_total": 5.5, "b": 7.0}


def test_the_supervisors_client_keeps_no_connection_between_probes() -> None:
    peers: list[Any] = []

    def health(request: Request) -> Reply:
        peers.append(request.headers.get("connection"))
        return Reply.json(200, json.loads('{"status": "ok"}'))

    with Scripted({"/health": health}) as server, probes.client() as client:
        for _ in range(2):
            assert adapter_for(Kind.LLAMA_SERVER).liveness(client, server.url, 2).ok
        assert peers == ["close", "close"]
        assert not client._connections  # nothing held open between probes
