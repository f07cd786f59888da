"""Making room for the new model: the plan's evictions, and the wait for the memory to be back.

Evictions stop a unit, unload an Ollama model or put a vLLM to sleep. What was stopped is
started again by a rollback (it is in the snapshot's units); what was put to sleep is woken
up again (`wake_again`): a failed switch leaves every other backend as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmctl import procs, systemd
from llmctl.backends.base import probe_client
from llmctl.errors import LlmctlError
from llmctl.paths import Paths

if TYPE_CHECKING:
    from llmctl.backends.http import HttpClient
    from llmctl.gpu import GpuSource
    from llmctl.planner import Eviction, Plan


@dataclass
class Evicted:
    stopped: tuple[str, ...] = ()  # units, started again by a rollback
    pids: list[int] = field(default_factory=list)  # their processes, whose memory must come back
    slept: tuple[str, ...] = ()  # vLLM units put to sleep, woken again by a rollback


def evict(plan: Plan, switching: str, paths: Paths, evicted: Evicted) -> None:
    """Carry out the plan's evictions, in order, recording each in `evicted` as it is done (so a
    failure half-way still knows what to undo)."""
    for eviction in plan.evictions:
        if eviction.backend == switching:
            continue  # the switch itself stops it
        if eviction.action == "stop":
            state = systemd.show([eviction.unit]).get(eviction.unit)
            if state is not None and state.running:
                evicted.pids.extend(procs.cgroup_pids(state.control_group) or [state.main_pid])
            systemd.stop([eviction.unit])
            evicted.stopped = (*evicted.stopped, eviction.unit)
        elif eviction.action in ("unload", "sleep"):
            released = release(eviction, paths)
            if released and eviction.action == "sleep":
                evicted.slept = (*evicted.slept, eviction.unit)


def to_touch(plan: Plan | None, switching: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(units the plan's evictions will stop, vLLM units they will put to sleep), of those that
    run now: what the intent record names before the first eviction, so that recovery from a
    kill brings back exactly what ran (a described inventory may name a unit that does not)."""
    evictions = [e for e in (plan.evictions if plan else ()) if e.backend != switching]
    wanted = [e for e in evictions if e.action in ("stop", "sleep")]
    states = systemd.show([e.unit for e in wanted])
    running = [e for e in wanted if (state := states.get(e.unit)) is not None and state.running]
    return (
        tuple(e.unit for e in running if e.action == "stop"),
        tuple(e.unit for e in running if e.action == "sleep"),
    )


def wake_again(evicted: Evicted, paths: Paths) -> list[str]:
    """Wake the vLLMs a failed switch put to sleep; one line per unit saying how it went."""
    return wake_up(evicted.slept, paths)[0]


def wake_up(units: Sequence[str], paths: Paths) -> tuple[list[str], list[str]]:
    """Wake these vLLM units (awake ones answer too): (a line per unit, the lines that failed)."""
    from llmctl.backends import vllm  # noqa: PLC0415

    return _ask_each(units, paths, vllm.wake_up, "woke up again", "woken up")


def put_to_sleep(units: Sequence[str], paths: Paths) -> tuple[list[str], list[str]]:
    """Put these vLLM units back to sleep (level 1, as evictions do): (lines, failed lines)."""
    from llmctl.backends import vllm  # noqa: PLC0415

    def sleep(client: HttpClient, url: str) -> None:
        vllm.sleep(client, url, 1)

    return _ask_each(units, paths, sleep, "asleep again", "put to sleep")


def _ask_each(
    units: Sequence[str], paths: Paths, call: Callable[[HttpClient, str], None], done: str, verb: str
) -> tuple[list[str], list[str]]:
    lines, failed = [], []
    for unit in units:
        name = unit.removeprefix("llmctl-").removesuffix(".service")
        try:
            with probe_client(60.0) as client:
                call(client, unit_url(unit, paths))
        except LlmctlError as exc:
            failed.append(f"{name} could not be {verb}: {exc.message} (llmctl restart {name})")
            lines.append(failed[-1])
        else:
            lines.append(f"{name} {done}")
    return lines, failed


def memory_waiter(
    plan: Plan | None, source: GpuSource | None, backend: str
) -> Callable[[list[int]], None] | None:
    """What to wait for after the stops: the stopped PIDs off the GPUs and the plan's memory
    free on each GPU the new model uses (vLLM checks its claim itself, without a reserve)."""
    if plan is None or source is None or plan.device != "gpu":
        return None
    from llmctl.vram import wait_memory_back  # noqa: PLC0415

    reserve = 0 if plan.kind == "vllm" else plan.reserve_bytes
    needs = {g.index: g.needs + reserve for g in plan.gpus if g.target and g.needs}

    def wait(pids: list[int]) -> None:
        wait_memory_back(source, pids, needs, what=f"after stopping for {plan.model} on {backend}")

    return wait


def release(eviction: Eviction, paths: Paths) -> bool:
    """Unload an Ollama model (asynchronous: waits until /api/ps no longer lists it) or put a
    vLLM to sleep, through the backend's own API. False when the unit was not running."""
    from llmctl.backends import ollama, vllm  # noqa: PLC0415

    unit = eviction.unit
    state = systemd.show([unit]).get(unit)
    if state is None or not state.running:
        return False
    url = unit_url(unit, paths)
    with probe_client(30.0) as client:
        if eviction.action == "unload" and eviction.model:
            ollama.unload(client, url, eviction.model, timeout=60)
        elif eviction.action == "sleep":
            vllm.sleep(client, url, 1)
    return True


def unit_url(unit: str, paths: Paths) -> str:
    from llmctl.stack import stack_from_installed  # noqa: PLC0415

    for installed in stack_from_installed(paths.config_home):
        if installed.unit == unit:
            return installed.url
    raise LlmctlError(f"{unit} is not installed; cannot ask it to free memory")
