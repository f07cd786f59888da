"""What each kind's adapter tells the planner about the memory it holds: idle from its work
counters, asleep only where sleep mode is on, per-model sizes only where one process holds many."""

from __future__ import annotations

from llmctl.backends import adapter_for
from llmctl.backends.base import MemoryFacts, probe_client
from llmctl.kinds import Kind
from tests.backends.standins import Reply
from tests.backends.test_checks import Scripted, slots


def test_llama_server_is_idle_when_no_slot_processes() -> None:
    adapter = adapter_for(Kind.LLAMA_SERVER)
    answer = {"reply": slots((7, 9, 3))}
    with probe_client(2.0, api_keys={}) as client, Scripted({"/slots": lambda _: answer["reply"]}) as server:
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts(idle=False)
        answer["reply"] = slots()
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts(idle=True)
        answer["reply"] = Reply.json(501, {"error": {"code": 501}})  # --no-slots
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts(idle=None)


def test_vllm_is_idle_when_no_request_runs_and_asleep_when_it_says_so() -> None:
    adapter = adapter_for(Kind.VLLM)
    running = {"n": 2}

    def metrics(_: object) -> Reply:
        text = f'vllm:num_requests_running{{model_name="m"}} {running["n"]}.0\n'
        return Reply(200, text.encode(), "text/plain")

    routes = {"/metrics": metrics, "/is_sleeping": lambda _: Reply.json(200, {"is_sleeping": True})}
    with probe_client(2.0, api_keys={}) as client, Scripted(routes) as server:
        assert adapter.memory_facts(client, server.url, 2.0, sleep_mode=True) == MemoryFacts(
            idle=False, asleep=True
        )
        running["n"] = 0
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts(idle=True, asleep=False)


def test_a_kind_without_work_counters_cannot_say_whether_it_is_idle() -> None:
    adapter = adapter_for(Kind.LLAMA_CPP_PYTHON)
    with probe_client(2.0, api_keys={}) as client, Scripted({}) as server:
        assert adapter.memory_facts(client, server.url, 2.0) == MemoryFacts()
        assert adapter.is_sleeping(client, server.url) is False
        assert server.requests == []  # nothing to ask it
