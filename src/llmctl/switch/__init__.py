"""`llmctl switch MODEL`: change the model a backend serves, as a transaction.

The order is what keeps every answer honest: llama.cpp servers answer a request for *any*
model name with whatever they have loaded, so

1. check: the model file and its GGUF header are read before anything is touched;
2. plan: the memory estimate must fit after the allowed evictions, or nothing happens;
3. routes out: the gateway stops routing the old model id to this backend (a request for it
   gets its fallback or a clear error) before the backend changes;
4. stop: the old server stops; its processes must be gone and its port free, and with a GPU
   plan (phase gpu-free) NVML must list none of them and show the memory the new model needs
   free, or the switch fails naming what still holds it (llmctl.vram);
5. start: the unit is rendered with the new model, started, and must list it;
6. verify: a one-token completion must succeed;
7. routes in: only now does the gateway route the new model id here.

When the gateway routes the models and the memory holds two copies of the new model beside
the old one, the new model starts first in a bridge unit and is routed there before the old
one stops (`beside`): no gap for the new model, and a model that fails to load never stopped
the old one.

Switching a vLLM in sleep mode to the model it already holds, while it sleeps, wakes it up
instead (plan, evict, wake, verify: no restart). Ollama loads models in place. Both are in
`in_place`; the evictions and the wait for memory are in `room`.

Any failure restores the snapshot taken first (units, gateway routes, the serving record) and
waits until the old model serves again. Each phase is timed; the timings are printed and
appended to switch-history.jsonl (for status and the supervisor's metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmctl import procs, snapshots, systemd, transaction
from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.config.load import LoadedConfig
from llmctl.converge import Progress, wait_serving
from llmctl.errors import LlmctlError
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.render.units import GATEWAY_FILE, RenderOptions, bridge_unit, render_stack
from llmctl.stack import stack_units
from llmctl.state import record_switch, serving_now
from llmctl.switch.beside import bridge_fits, start_bridge, stop_bridge
from llmctl.switch.in_place import load_into_ollama, switch_ollama, vllm_asleep, wake_vllm
from llmctl.switch.room import Evicted, evict, memory_waiter, to_touch, wake_again
from llmctl.switch.steps import (
    HISTORY_FILE,
    Phases,
    SwitchResult,
    all_serving,
    check_backend_key,
    check_model_file,
    install,
    one_token,
    record_history,
    refuse_if_unfit,
    resolve,
    set_routes,
    wait_stopped,
)

if TYPE_CHECKING:
    from llmctl.gpu import GpuSource

__all__ = [
    "HISTORY_FILE", "Evicted", "SwitchResult", "check_model_file", "evict", "load_into_ollama", "one_token",
    "record_history", "refuse_if_unfit", "resolve", "switch",
]  # fmt: skip


def switch(
    loaded: LoadedConfig,
    paths: Paths,
    model_id: str,
    *,
    render_options: Callable[[dict[str, str]], RenderOptions],
    backend: str | None = None,
    timeout: float | None = None,
    wait_lock: bool = True,
    progress: Progress | None = None,
    on_phase: Callable[[str, float], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    gpu_source: GpuSource | None = None,
    snapshot_command: str = "switch",
) -> SwitchResult:
    """snapshot_command names the snapshot's command (`load` for llmctl's router: those are
    pruned among themselves). With `gpu_source` (NVML or a described
    inventory: `gpu.source_for`) the switch plans its memory (`planner.live.plan_for`) and
    waits after every stop until the memory is back; without one, nothing is planned (tests of
    the transaction alone)."""
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    name = resolve(loaded, model_id, backend)
    kind_adapter = adapter_for(loaded.config.backends[name].kind)
    if kind_adapter.serves_many:
        return switch_ollama(
            loaded, paths, name, model_id, timeout, wait_lock, on_phase, on_message, gpu_source
        )
    with state_lock(paths.state_dir, "switch", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message)
        serving = serving_now(loaded.config, paths.state_dir)
        old = serving.get(name) or getattr(loaded.config.backends[name], "model", None)
        result = SwitchResult(backend=name, old=old, new=model_id)
        phase = Phases(result, on_phase)
        with phase("check"):
            check_backend_key(loaded, paths, name)
            check_model_file(loaded, model_id)
        plan = None
        if gpu_source is not None:
            from llmctl.planner.live import plan_for  # noqa: PLC0415 - only a GPU plan needs it

            with phase("plan"):
                plan = plan_for(loaded.config, model_id, backend=name, serving=serving, gpu_source=gpu_source)
            refuse_if_unfit(plan)
        unit_state = systemd.show([f"llmctl-{name}.service"]).get(f"llmctl-{name}.service")
        if old == model_id and unit_state is not None and unit_state.active_state == "active":
            if vllm_asleep(loaded, name):
                return wake_vllm(loaded, paths, name, result, phase, plan, gpu_source, timeout)
            result.unchanged = True
            return result
        snapshot = snapshots.take(
            paths, loaded.path, reason=f"before switch {name} to {model_id}", command=snapshot_command,
            keep=loaded.config.snapshots.keep,
        )  # fmt: skip
        result.snapshot = snapshot.id
        beside = bridge_fits(loaded, plan, name)
        # Every unit this switch may touch, before it touches any: a kill at any phase is undone
        # whole by the next command (evicted backends started, slept vLLMs woken, bridge gone).
        stops, sleeps = to_touch(plan, name)
        touched = (f"llmctl-{name}.service", *((bridge_unit(name),) if beside else ()), *stops)
        intent = transaction.begin(paths.state_dir, "switch", snapshot.id, touched, wake=sleeps)
        evicted = Evicted()
        waiter = memory_waiter(plan, gpu_source, name)

        def memory_back(pids: list[int]) -> None:
            if waiter is not None:
                waiter(pids + evicted.pids)

        try:
            if plan is not None and plan.evictions:
                with phase("evict"):
                    evict(plan, name, paths, evicted)
                intent = transaction.advance(paths.state_dir, intent, "evict")
            _apply(
                loaded, paths, name, model_id, serving, phase, intent, render_options, timeout, progress,
                memory_back if waiter is not None else None, beside,
            )  # fmt: skip
        except (LlmctlError, KeyboardInterrupt) as failure:
            record_history(paths, result, ok=False)
            error = recovery.roll_back_after(
                paths,
                snapshot.id,
                failure,
                also=(f"llmctl-{name}.service", *evicted.stopped),
                on_message=on_message,
                note=_still_serving(old, result),
            )
            error.details.extend(wake_again(evicted, paths))
            raise error from None
        transaction.finish(paths.state_dir)
        result.evicted = tuple(
            unit.removeprefix("llmctl-").removesuffix(".service") for unit in evicted.stopped
        )
        record_history(paths, result, ok=True)
    return result


def _apply(
    loaded: LoadedConfig,
    paths: Paths,
    name: str,
    model_id: str,
    serving: dict[str, str],
    phase: Phases,
    intent: transaction.Intent,
    render_options: Callable[[dict[str, str]], RenderOptions],
    timeout: float | None,
    progress: Progress | None,
    memory_back: Callable[[list[int]], None] | None,
    beside: bool,
) -> None:
    """Phases 3 to 7 (see the module docstring); raises on the first failure. With `beside`,
    the new model first serves from a bridge unit (phases bridge, routes-bridge; see beside.py)."""
    new_serving = {**serving, name: model_id}
    unit = next(u for u in stack_units(loaded.config, new_serving) if u.name == name)
    bridge = None
    if beside:
        with phase("bridge"):
            bridge = start_bridge(
                loaded, paths, unit, model_id, render_options(new_serving), timeout, progress
            )
        intent = transaction.advance(paths.state_dir, intent, "bridge")
        with phase("routes-bridge"):
            set_routes(loaded, paths, all_serving(loaded, new_serving), {name: bridge.address})
        intent = transaction.advance(paths.state_dir, intent, "routes-bridge")
    else:
        with phase("routes-out"):
            others = {k: v for k, v in all_serving(loaded, serving).items() if k != name}
            set_routes(loaded, paths, others)
        intent = transaction.advance(paths.state_dir, intent, "routes-out")
    with phase("stop"):
        state = systemd.show([unit.unit]).get(unit.unit)
        pids = procs.cgroup_pids(state.control_group) if state and state.running else []
        systemd.stop([unit.unit])
        wait_stopped(unit, pids)
    if memory_back is not None:
        with phase("gpu-free"):
            memory_back(pids)
    intent = transaction.advance(paths.state_dir, intent, "stopped")
    with phase("start"):
        record_switch(loaded.config, paths.state_dir, new_serving)
        stack = render_stack(loaded.config, render_options(new_serving))
        # The gateway file is left as it is (old route out) until the model is verified.
        stack.files.pop(GATEWAY_FILE, None)
        if bridge is not None:
            stack.files[bridge.file] = bridge.text  # installed until the unit serves in its place
        install(stack, paths)
        systemd.reset_failed([unit.unit])
        job = systemd.start_job(unit.unit)
        with probe_client(5.0) as client:
            wait_serving(unit, timeout or unit.start_timeout, client, progress, job=job)
    intent = transaction.advance(paths.state_dir, intent, "started")
    with phase("verify"):
        one_token(unit, model_id, timeout=60)
    with phase("routes-in"):
        set_routes(loaded, paths, all_serving(loaded, new_serving))
    transaction.advance(paths.state_dir, intent, "routes-in")
    if bridge is not None:
        with phase("bridge-stop"):
            stop_bridge(bridge, paths)


def _still_serving(old: str | None, result: SwitchResult) -> str:
    if not old:
        return ""
    if "stop" not in result.entered:
        return f"{old} never stopped"  # the failure came first (in the bridge, or the evictions)
    return f"{old} serves again"
