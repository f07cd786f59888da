"""The router's policy, with a fake loader: admission, swaps, drain, pinning, idle unload."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from llmctl.router.scheduler import (
    FAILURE_HOLD,
    Event,
    LoadFailed,
    LoadOutcome,
    ModelPolicy,
    Scheduler,
    Unavailable,
)


@dataclass
class FakeLoader:
    """Records calls; a load takes `load_seconds` and fails for models in `broken`."""

    load_seconds: float = 0.01
    broken: set[str] = field(default_factory=set)
    victims_of: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def victims(self, backend: str, model: str) -> list[str]:
        if model == "huge":
            raise Unavailable("huge needs 80 GiB, 24 GiB free after every allowed eviction")
        return self.victims_of.get(model, [])

    async def load(
        self, backend: str, model: str, *, evict: Sequence[str], restore: str | None
    ) -> LoadOutcome:
        self.calls.append(("load", backend, model, *evict))
        await asyncio.sleep(self.load_seconds)
        if model in self.broken:
            raise LoadFailed(f"{model} exited with status 1", loaded=restore)
        return LoadOutcome(loaded=model, seconds=self.load_seconds, evicted=tuple(evict))

    async def unload(self, backend: str) -> None:
        self.calls.append(("unload", backend))


def make(loader: FakeLoader, *policies: ModelPolicy, drain: float = 5.0) -> tuple[Scheduler, list[Event]]:
    events: list[Event] = []
    scheduler = Scheduler(
        {p.model_id: p for p in policies}, {"ollama"}, loader, drain_timeout=drain, on_event=events.append
    )
    return scheduler, events


def two_models(**alpha: object) -> list[ModelPolicy]:
    return [
        ModelPolicy("alpha", "native", load_timeout=5, **alpha),  # type: ignore[arg-type]
        ModelPolicy("beta", "native", load_timeout=5),
    ]


async def request(scheduler: Scheduler, model: str, seconds: float, log: list[str]) -> None:
    lease = await scheduler.admit(model)
    log.append(f"start {model} (loaded {lease.slot.loaded})")
    await asyncio.sleep(seconds)
    log.append(f"end {model}")
    lease.release()


def test_loaded_model_is_admitted_without_a_load() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        lease = await scheduler.admit("alpha")
        assert scheduler.slots["native"].in_flight["alpha"] == 1
        lease.release()
        assert loader.calls == []
        assert "alpha" not in scheduler.slots["native"].in_flight

    asyncio.run(go())


def test_request_for_unloaded_model_loads_it_and_is_answered_by_it() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, events = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        lease = await scheduler.admit("beta")
        assert lease.slot.loaded == "beta"
        assert loader.calls == [("load", "native", "beta")]
        assert [(e.kind, e.model) for e in events] == [("evict", "alpha"), ("load", "beta")]
        assert events[0].detail == "demand: a request asked for beta"
        lease.release()

    asyncio.run(go())


def test_swap_waits_for_the_stream_in_flight_then_happens_at_once() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        log: list[str] = []
        stream = asyncio.create_task(request(scheduler, "alpha", 0.3, log))
        await asyncio.sleep(0.05)
        await request(scheduler, "beta", 0.0, log)
        await stream
        # The stream on alpha finished before beta's load began, and beta was served by beta.
        assert log == ["start alpha (loaded alpha)", "end alpha", "start beta (loaded beta)", "end beta"]

    asyncio.run(go())


def test_new_requests_for_the_loaded_model_queue_behind_a_waiting_swap() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        log: list[str] = []
        first = asyncio.create_task(request(scheduler, "alpha", 0.2, log))
        await asyncio.sleep(0.02)
        beta = asyncio.create_task(request(scheduler, "beta", 0.0, log))
        await asyncio.sleep(0.02)
        late_alpha = asyncio.create_task(request(scheduler, "alpha", 0.0, log))
        await asyncio.gather(first, beta, late_alpha)
        # No starvation: the alpha that came after beta's request waits for beta's turn.
        assert log.index("start beta (loaded beta)") < log.index("start alpha (loaded alpha)", 1)
        assert [c[2] for c in loader.calls] == ["beta", "alpha"]

    asyncio.run(go())


def test_alternating_client_gets_one_load_per_request() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models())
        log: list[str] = []
        for model in ["alpha", "beta"] * 3:
            await request(scheduler, model, 0.0, log)
        assert [c[2] for c in loader.calls] == ["alpha", "beta"] * 3
        assert all(f"(loaded {line.split()[1]})" in line for line in log if line.startswith("start"))

    asyncio.run(go())


def test_pinned_model_is_never_evicted() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models(pinned=True))
        scheduler.set_loaded("native", "alpha")
        with pytest.raises(Unavailable, match="would evict alpha, which is pinned"):
            await scheduler.admit("beta")
        assert loader.calls == []
        assert scheduler.slots["native"].loaded == "alpha"

    asyncio.run(go())


def test_pinned_model_on_another_backend_is_never_evicted_for_memory() -> None:
    async def go() -> None:
        loader = FakeLoader(victims_of={"beta": ["py"]})
        scheduler, _ = make(loader, *two_models(), ModelPolicy("gemma", "py", pinned=True, load_timeout=5))
        scheduler.set_loaded("py", "gemma")
        with pytest.raises(Unavailable, match=r"would evict gemma \(py\), which is pinned"):
            await scheduler.admit("beta")
        assert loader.calls == []

    asyncio.run(go())


def test_evicting_another_backend_drains_it_first_and_forgets_its_model() -> None:
    async def go() -> None:
        loader = FakeLoader(victims_of={"beta": ["py"]})
        scheduler, events = make(loader, *two_models(), ModelPolicy("gemma", "py", load_timeout=5))
        scheduler.set_loaded("py", "gemma")
        log: list[str] = []
        stream = asyncio.create_task(request(scheduler, "gemma", 0.2, log))
        await asyncio.sleep(0.02)
        await request(scheduler, "beta", 0.0, log)
        await stream
        assert log[:2] == ["start gemma (loaded gemma)", "end gemma"]
        assert loader.calls == [("load", "native", "beta", "py")]
        assert scheduler.slots["py"].loaded is None
        assert ("evict", "py", "gemma") in [(e.kind, e.backend, e.model) for e in events]

    asyncio.run(go())


def test_model_that_cannot_fit_fails_with_the_reason_and_nothing_is_stopped() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models(), ModelPolicy("huge", "native", load_timeout=5))
        scheduler.set_loaded("native", "alpha")
        with pytest.raises(Unavailable, match="needs 80 GiB"):
            await scheduler.admit("huge")
        assert loader.calls == []
        assert scheduler.slots["native"].loaded == "alpha"
        lease = await scheduler.admit("alpha")  # still served
        lease.release()

    asyncio.run(go())


def test_failed_load_answers_later_requests_at_once_for_a_while() -> None:
    async def go() -> None:
        now = [100.0]
        loader = FakeLoader(broken={"beta"})
        scheduler, events = make(loader, *two_models())
        scheduler.clock = lambda: now[0]
        scheduler.set_loaded("native", "alpha")
        with pytest.raises(Unavailable, match="beta exited with status 1"):
            await scheduler.admit("beta")
        with pytest.raises(Unavailable, match="beta exited with status 1"):
            await scheduler.admit("beta")  # a retry: no second load
        assert len(loader.calls) == 1
        assert events[-1].kind == "load-failed"
        now[0] += FAILURE_HOLD + 1
        loader.broken.clear()
        lease = await scheduler.admit("beta")
        assert lease.slot.loaded == "beta"
        lease.release()

    asyncio.run(go())


def test_load_timeout_is_a_clear_503_reason() -> None:
    async def go() -> None:
        loader = FakeLoader(load_seconds=1.0)
        scheduler, _ = make(loader, ModelPolicy("slow", "native", load_timeout=0.1))
        with pytest.raises(Unavailable, match=r"did not load within its load_timeout of 0\.1 s"):
            await scheduler.admit("slow")

    asyncio.run(go())


def test_min_residency_holds_the_model_before_a_swap() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models(min_residency=0.3))
        scheduler.set_loaded("native", "alpha")
        loop = asyncio.get_running_loop()
        start = loop.time()
        lease = await scheduler.admit("beta")
        lease.release()
        assert loop.time() - start >= 0.25

    asyncio.run(go())


def test_idle_unload_fires_after_the_time_and_not_before_and_never_for_pinned() -> None:
    async def go() -> None:
        now = [0.0]
        loader = FakeLoader()
        scheduler, events = make(
            loader,
            ModelPolicy("alpha", "native", idle_unload=60),
            ModelPolicy("gemma", "py", idle_unload=60, pinned=True),
        )
        scheduler.clock = lambda: now[0]
        scheduler.set_loaded("native", "alpha")
        scheduler.set_loaded("py", "gemma")
        (await scheduler.admit("alpha")).release()
        now[0] = 59.0
        assert await scheduler.unload_idle() == []
        now[0] = 61.0
        assert await scheduler.unload_idle() == ["native"]
        assert loader.calls == [("unload", "native")]
        assert scheduler.slots["native"].loaded is None
        assert scheduler.slots["py"].loaded == "gemma"
        assert events[-1].kind == "idle-unload"

    asyncio.run(go())


def test_idle_unload_skips_a_model_with_a_request_in_flight() -> None:
    async def go() -> None:
        now = [0.0]
        scheduler, _ = make(FakeLoader(), ModelPolicy("alpha", "native", idle_unload=1))
        scheduler.clock = lambda: now[0]
        scheduler.set_loaded("native", "alpha")
        lease = await scheduler.admit("alpha")
        now[0] = 100.0
        assert await scheduler.unload_idle() == []
        lease.release()

    asyncio.run(go())


def test_explicit_switch_goes_through_the_queue_and_reports_the_outcome() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, events = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        outcome = await scheduler.switch("beta")
        assert outcome.loaded == "beta"
        assert not outcome.unchanged
        assert (await scheduler.switch("beta")).unchanged
        assert events[-1].detail == "switch"
        assert [e.detail.split(":")[0] for e in events if e.kind == "evict"] == ["switch"]

    asyncio.run(go())


def test_ollama_backend_admits_every_model() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, ModelPolicy("a", "ollama"), ModelPolicy("b", "ollama"))
        leases = [await scheduler.admit("a"), await scheduler.admit("b")]
        assert loader.calls == []
        for lease in leases:
            lease.release()

    asyncio.run(go())


def test_drain_all_lets_requests_in_flight_finish_and_refuses_new_ones() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, _ = make(loader, *two_models())
        scheduler.set_loaded("native", "alpha")
        log: list[str] = []
        stream = asyncio.create_task(request(scheduler, "alpha", 0.2, log))
        await asyncio.sleep(0.02)
        waiting = asyncio.create_task(scheduler.admit("beta"))  # queued behind the stream
        draining = asyncio.create_task(scheduler.drain_all())
        await asyncio.sleep(0.02)
        with pytest.raises(Unavailable, match="stopping"):
            await waiting  # a load is never started while stopping
        with pytest.raises(Unavailable, match="stopping"):
            await scheduler.admit("beta")
        # The loaded model still answers while the drain runs (a restart must not fail it),
        # and the drain waits for it too.
        late = asyncio.create_task(request(scheduler, "alpha", 0.3, log))
        await draining
        assert log == ["start alpha (loaded alpha)", "start alpha (loaded alpha)", "end alpha", "end alpha"]
        await asyncio.gather(stream, late)
        with pytest.raises(Unavailable, match="stopping"):
            await scheduler.admit("alpha")
        assert not any(call[0] == "load" for call in loader.calls)

    asyncio.run(go())


def test_drain_timeout_bounds_the_wait_and_says_so() -> None:
    async def go() -> None:
        loader = FakeLoader()
        scheduler, events = make(loader, *two_models(), drain=0.1)
        scheduler.set_loaded("native", "alpha")
        stuck = await scheduler.admit("alpha")  # never released before the swap
        lease = await scheduler.admit("beta")
        assert events[0].kind == "drain-timeout"
        lease.release()
        stuck.release()

    asyncio.run(go())


def test_unknown_model_is_unavailable() -> None:
    async def go() -> None:
        scheduler, _ = make(FakeLoader(), *two_models())
        with pytest.raises(Unavailable, match="not a local model"):
            await scheduler.admit("gpt-9")

    asyncio.run(go())


def test_a_failed_idle_unload_is_an_event_and_the_model_counts_as_unloaded() -> None:
    async def go() -> None:
        now = [0.0]

        class Stuck(FakeLoader):
            async def unload(self, backend: str) -> None:
                raise RuntimeError("processes [42] are still alive")

        scheduler, events = make(Stuck(), ModelPolicy("alpha", "native", idle_unload=1))
        scheduler.clock = lambda: now[0]
        scheduler.set_loaded("native", "alpha")
        now[0] = 10.0
        assert await scheduler.unload_idle() == []
        assert (events[-1].kind, events[-1].detail) == (
            "idle-unload-failed",
            "processes [42] are still alive",
        )
        assert scheduler.slots["native"].loaded is None  # a request loads it again, checking memory

    asyncio.run(go())


def test_a_backend_the_plan_put_to_sleep_is_forgotten_too() -> None:
    """A vLLM put to sleep for room is not among the stopped units, yet serves nothing: a
    request for its model must wait for a load (which wakes it), not be sent to it asleep."""

    async def go() -> None:
        class Sleeper(FakeLoader):
            async def load(
                self, backend: str, model: str, *, evict: Sequence[str], restore: str | None
            ) -> LoadOutcome:
                self.calls.append(("load", backend, model, *evict))
                return LoadOutcome(loaded=model, seconds=0.0, evicted=())  # slept, not stopped

        loader = Sleeper(victims_of={"beta": ["big"]})
        scheduler, _ = make(loader, *two_models(), ModelPolicy("qwen", "big", load_timeout=5))
        scheduler.set_loaded("big", "qwen")
        (await scheduler.admit("beta")).release()
        assert scheduler.slots["big"].loaded is None
        (await scheduler.admit("qwen")).release()
        assert loader.calls[-1][:3] == ("load", "big", "qwen")

    asyncio.run(go())
