"""Switches that change no unit: Ollama loads the model it is asked for, and a vLLM that sleeps
with the model asked for is woken up (vLLM's sleep mode keeps the weights in CPU RAM, level 1:
waking takes a second where a restart takes minutes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmctl import systemd, transaction
from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.config.load import LoadedConfig
from llmctl.errors import LlmctlError
from llmctl.kinds import Kind
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.stack import stack_units
from llmctl.state import serving_now
from llmctl.switch.room import Evicted, evict, memory_waiter, to_touch, wake_again
from llmctl.switch.steps import Phases, SwitchResult, one_token, record_history, refuse_if_unfit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmctl.backends.http import HttpClient
    from llmctl.gpu import GpuSource
    from llmctl.planner import Plan


def load_into_ollama(
    client: HttpClient, url: str, source: str, keep_alive: str | None, unload: Sequence[str], timeout: float
) -> None:
    """Unload what the plan evicts (waiting until /api/ps no longer lists it: Ollama frees
    memory asynchronously), then load the model with the backend's keep-alive and check it is
    loaded."""
    from llmctl.backends import ollama  # noqa: PLC0415

    for model in unload:
        ollama.unload(client, url, model, timeout=60)
    ollama.load(client, url, source, keep_alive, timeout=timeout)
    loaded = {ollama.canonical(m.name) for m in ollama.loaded_models(client, url)}
    if ollama.canonical(source) not in loaded:
        raise LlmctlError(f"Ollama at {url} answered the load of {source}, but /api/ps does not list it")


def switch_ollama(
    loaded: LoadedConfig,
    paths: Paths,
    name: str,
    model_id: str,
    timeout: float | None,
    wait_lock: bool,
    on_phase: Callable[[str, float], None] | None,
    on_message: Callable[[str], None] | None,
    gpu_source: GpuSource | None,
) -> SwitchResult:
    """Ollama serves every model assigned to it: a switch loads one (and unloads what the plan
    says must make room). No unit or route changes, so there is nothing to snapshot; the intent
    record names what the evictions touch."""
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    backend = loaded.config.backends[name]
    model = loaded.config.models[model_id]
    assert model.source is not None
    unit = next(u for u in stack_units(loaded.config) if u.name == name)
    result = SwitchResult(backend=name, old=None, new=model_id)
    phase = Phases(result, on_phase)
    with state_lock(paths.state_dir, "switch", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message)
        plan = None
        if gpu_source is not None:
            from llmctl.planner.live import plan_for  # noqa: PLC0415 - only a GPU plan needs it

            with phase("plan"):
                serving = serving_now(loaded.config, paths.state_dir)
                plan = plan_for(loaded.config, model_id, backend=name, serving=serving, gpu_source=gpu_source)
            refuse_if_unfit(plan)
        unload = [e.model for e in (plan.evictions if plan else ()) if e.action == "unload" and e.model]
        evicted = Evicted()
        intent = _begin(paths, plan, name)
        try:
            _make_room(plan, name, paths, evicted, phase, gpu_source, intent)
            with phase("load"), probe_client(30.0) as client:
                load_into_ollama(
                    client, unit.url, model.source, getattr(backend, "keep_alive", None), unload,
                    timeout or unit.start_timeout,
                )  # fmt: skip
        except LlmctlError as failure:
            record_history(paths, result, ok=False)
            raise _undo(failure, evicted, paths) from None
        transaction.finish(paths.state_dir)
        record_history(paths, result, ok=True)
    return result


def _begin(
    paths: Paths, plan: Plan | None, name: str, asleep: tuple[str, ...] = ()
) -> transaction.Intent | None:
    """The intent record of a switch that changes no file: what its evictions will stop or put
    to sleep (and `asleep`: what it wakes). None without evictions: a kill then leaves the other
    backends as they were, and the asked model loaded or not."""
    stops, sleeps = to_touch(plan, name)
    if not stops and not sleeps:
        return None
    return transaction.begin(paths.state_dir, "switch", "", stops, wake=sleeps, sleep=asleep)


def _make_room(
    plan: Plan | None,
    name: str,
    paths: Paths,
    evicted: Evicted,
    phase: Phases,
    gpu_source: GpuSource | None,
    intent: transaction.Intent | None,
) -> None:
    """The plan's evictions (recorded in `evicted`), then the wait for the memory to be back."""
    if plan is not None and plan.evictions:
        with phase("evict"):
            evict(plan, name, paths, evicted)
        if intent is not None:
            transaction.advance(paths.state_dir, intent, "evict")
    memory_back = memory_waiter(plan, gpu_source, name)
    if memory_back is not None:
        with phase("gpu-free"):
            memory_back(evicted.pids)


def _undo(failure: LlmctlError, evicted: Evicted, paths: Paths) -> LlmctlError:
    """What was stopped for room starts again, what was put to sleep wakes up: say so."""
    systemd.start(list(evicted.stopped), block=False)
    failure.details.extend(f"{unit} started again" for unit in evicted.stopped)
    failure.details.extend(wake_again(evicted, paths))
    transaction.finish(paths.state_dir)  # undone: nothing is left for a recovery
    return failure


def vllm_asleep(loaded: LoadedConfig, name: str) -> bool:
    """Whether backend `name` is a vLLM in sleep mode that sleeps now (asked over its API)."""
    if not getattr(loaded.config.backends[name], "sleep_mode", False):
        return False
    unit = next(u for u in stack_units(loaded.config) if u.name == name)
    with probe_client(5.0) as client:
        # Cannot tell (None: not answering): the normal path (restart) handles it.
        return adapter_for(Kind(unit.kind)).is_sleeping(client, unit.url) is True


def wake_vllm(
    loaded: LoadedConfig,
    paths: Paths,
    name: str,
    result: SwitchResult,
    phase: Phases,
    plan: Plan | None,
    gpu_source: GpuSource | None,
    timeout: float | None,
) -> SwitchResult:
    """Make room as planned (for vLLM's whole claim), wake it, check it lists and generates.
    Called with the state lock held. On failure, what was evicted comes back."""
    from llmctl.backends import vllm  # noqa: PLC0415
    from llmctl.readiness import wait_ready  # noqa: PLC0415

    unit = next(u for u in stack_units(loaded.config) if u.name == name)
    evicted = Evicted()
    # A kill after the wake must not leave it awake beside the evicted ones started again.
    intent = _begin(paths, plan, name, asleep=(unit.unit,))
    try:
        _make_room(plan, name, paths, evicted, phase, gpu_source, intent)
        with phase("wake"), probe_client(60.0) as client:
            vllm.wake_up(client, unit.url)
            wait_ready(unit.kind, unit.url, result.new, timeout or 60.0, client=client)
        with phase("verify"):
            one_token(unit, result.new, timeout=60)
    except LlmctlError as failure:
        record_history(paths, result, ok=False)
        raise _undo(failure, evicted, paths) from None
    transaction.finish(paths.state_dir)
    record_history(paths, result, ok=True)
    return result
