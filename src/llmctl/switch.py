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

Any failure restores the snapshot taken first (units, gateway routes, the serving record) and
waits until the old model serves again. Each phase is timed; the timings are printed and
appended to switch-history.jsonl (for status and the supervisor's metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import procs, snapshots, systemd, transaction
from llmctl.backends import adapter_for
from llmctl.backends.base import probe_client
from llmctl.config.checks import classify_source
from llmctl.config.load import LoadedConfig
from llmctl.errors import ExitCode, LlmctlError
from llmctl.fsutil import atomic_write
from llmctl.install import ChangeKind, apply_changes, compare
from llmctl.lifecycle import Progress, wait_serving
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.render.gateway import render_gateway_config
from llmctl.render.units import GATEWAY_FILE, GATEWAY_UNIT, RenderedStack, RenderOptions, render_stack
from llmctl.stack import StackUnit, stack_units

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmctl.backends.http import HttpClient
    from llmctl.gpu import GpuSource
    from llmctl.planner import Eviction, Plan
from llmctl.state import effective_serving, load_serving, save_serving

HISTORY_FILE = "switch-history.jsonl"
HISTORY_KEEP = 1000


@dataclass
class SwitchResult:
    backend: str
    old: str | None
    new: str
    phases: list[tuple[str, float]] = field(default_factory=list)
    snapshot: str | None = None
    unchanged: bool = False

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.phases)


def resolve(loaded: LoadedConfig, model_id: str, backend: str | None) -> str:
    """The backend that serves `model_id` (checked against --backend when given)."""
    config = loaded.config
    model = config.models.get(model_id)
    if model is None:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(model_id, list(config.models), n=1)
        raise LlmctlError(
            f"no model named {model_id!r} in the config",
            hint=(f"did you mean '{close[0]}'? " if close else "") + "llmctl config show lists them",
            exit_code=ExitCode.USAGE,
        )
    if model.remote is not None or model.backend is None:
        raise LlmctlError(
            f"{model_id} is served by a remote provider; there is nothing to switch",
            exit_code=ExitCode.USAGE,
        )
    if backend is not None and backend != model.backend:
        raise LlmctlError(
            f"{model_id} belongs to backend {model.backend!r}, not {backend!r}",
            hint="Each model names its backend in the config (models.ID.backend).",
            exit_code=ExitCode.USAGE,
        )
    return model.backend


def check_model_file(loaded: LoadedConfig, model_id: str) -> None:
    """The file must exist and (for GGUF) its header must parse: checked before touching anything."""
    model = loaded.config.models[model_id]
    assert model.source is not None
    kind = classify_source(model.source)
    if kind not in ("gguf", "directory"):
        return
    path = Path(model.source).expanduser()
    if not path.exists():
        raise LlmctlError(
            f"the model file of {model_id} does not exist: {path}",
            hint="Nothing was changed; the current model keeps serving.",
            exit_code=ExitCode.USAGE,
        )
    if kind == "gguf":
        from llmctl.estimate import read_gguf  # noqa: PLC0415

        try:
            read_gguf(path)
        except LlmctlError as err:
            raise LlmctlError(
                f"the model file of {model_id} is not a usable GGUF: {err.message}",
                hint="Nothing was changed; the current model keeps serving.",
                exit_code=ExitCode.USAGE,
            ) from None


class _Phases:
    def __init__(self, result: SwitchResult, on_phase: Callable[[str, float], None] | None) -> None:
        self.result = result
        self.on_phase = on_phase

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        took = time.monotonic() - start
        self.result.phases.append((name, took))
        if self.on_phase is not None:
            self.on_phase(name, took)


def _install(stack: RenderedStack, paths: Paths) -> set[str]:
    changes = compare(stack, paths.config_home)
    apply_changes(changes, paths.config_home)
    changed = {c.path for c in changes if c.kind is not ChangeKind.UNCHANGED}
    if changed:
        systemd.daemon_reload()
    return changed


def _gateway_running() -> bool:
    state = systemd.show([GATEWAY_UNIT]).get(GATEWAY_UNIT)
    return state is not None and state.active_state == "active"


def _set_routes(loaded: LoadedConfig, paths: Paths, serving: dict[str, str]) -> None:
    """Write gateway.yaml for `serving` and, when the gateway runs, reload it (no request lost)."""
    if not loaded.config.gateway.enabled:
        return
    text = render_gateway_config(loaded.config, serving)
    target = paths.config_home / GATEWAY_FILE
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    atomic_write(target, text)
    if _gateway_running():
        systemd.reload([GATEWAY_UNIT])


def _one_token(unit: StackUnit, model_id: str, timeout: float) -> None:
    """A real completion: a server can list its model and still fail to generate."""
    with probe_client(timeout) as client:
        from llmctl.backends.http import transport_errors  # noqa: PLC0415

        try:
            response = client.post(
                f"{unit.url}/v1/chat/completions",
                json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            )
        except transport_errors() as exc:
            raise LlmctlError(f"{unit.name}: the test completion failed: {exc}") from None
    if response.status_code != 200:
        raise LlmctlError(
            f"{unit.name}: the test completion answered {response.status_code}: {response.text[:200]}"
        )


def _wait_stopped(unit: StackUnit, pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = procs.alive(pids)
        if not left and not procs.port_in_use(unit.host, unit.port):
            return
        time.sleep(0.02)
    holders = procs.alive(pids)
    raise LlmctlError(
        f"{unit.name} stopped, but "
        + (f"processes {holders} are still alive" if holders else f"port {unit.port} is still bound"),
        hint="llmctl runbook gpu-memory-not-freed",
    )


def record_history(paths: Paths, result: SwitchResult, ok: bool) -> None:
    """Append one line per switch (bounded), for status and the metrics."""
    path = paths.state_dir / HISTORY_FILE
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": result.backend,
        "from": result.old,
        "to": result.new,
        "ok": ok,
        "total_s": round(result.total, 3),
        "phases": {name: round(seconds, 3) for name, seconds in result.phases},
    }
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[-(HISTORY_KEEP - 1) :]
    except FileNotFoundError:
        lines = []
    atomic_write(path, "\n".join([*lines, json.dumps(entry)]) + "\n")


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
    plan_fn: Callable[[dict[str, str]], Plan] | None = None,
    gpu_source: GpuSource | None = None,
) -> SwitchResult:
    """plan_fn(serving) returns the memory plan (the CLI builds it from NVML or a described
    inventory); without one, nothing is planned (tests of the transaction alone). With a GPU
    plan and `gpu_source`, every stop is followed by a wait until the memory is back."""
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    name = resolve(loaded, model_id, backend)
    kind_adapter = adapter_for(loaded.config.backends[name].kind)
    if kind_adapter.serves_many:
        return _switch_ollama(
            loaded, paths, name, model_id, timeout, wait_lock, on_phase, on_message, plan_fn, gpu_source
        )
    with state_lock(paths.state_dir, "switch", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message)
        serving = effective_serving(loaded.config, load_serving(paths.state_dir))
        old = serving.get(name) or getattr(loaded.config.backends[name], "model", None)
        result = SwitchResult(backend=name, old=old, new=model_id)
        phase = _Phases(result, on_phase)
        with phase("check"):
            check_model_file(loaded, model_id)
        plan = None
        if plan_fn is not None:
            with phase("plan"):
                plan = plan_fn(serving)
            refuse_if_unfit(plan)
        unit_state = systemd.show([f"llmctl-{name}.service"]).get(f"llmctl-{name}.service")
        if old == model_id and unit_state is not None and unit_state.active_state == "active":
            result.unchanged = True
            return result
        snapshot = snapshots.take(
            paths, loaded.path, reason=f"before switch {name} to {model_id}", command="switch",
            keep=loaded.config.snapshots.keep,
        )  # fmt: skip
        result.snapshot = snapshot.id
        intent = transaction.begin(paths.state_dir, "switch", snapshot.id, (f"llmctl-{name}.service",))
        evicted: tuple[str, ...] = ()
        waiter = _memory_waiter(plan, gpu_source, name)
        evicted_pids: list[int] = []

        def memory_back(pids: list[int]) -> None:
            if waiter is not None:
                waiter(pids + evicted_pids)

        try:
            if plan is not None and plan.evictions:
                with phase("evict"):
                    evicted, evicted_pids = evict(plan, name, paths)
            _apply(
                loaded, paths, name, model_id, serving, phase, intent, render_options, timeout, progress,
                memory_back if waiter is not None else None,
            )  # fmt: skip
        except (LlmctlError, KeyboardInterrupt) as failure:
            record_history(paths, result, ok=False)
            raise recovery.roll_back_after(
                paths,
                snapshot.id,
                failure,
                also=(f"llmctl-{name}.service", *evicted),
                on_message=on_message,
                note=f"{old} serves again" if old else "",
            ) from None
        transaction.finish(paths.state_dir)
        record_history(paths, result, ok=True)
    return result


def refuse_if_unfit(plan: Plan) -> None:
    """Refuse before touching anything when even every allowed eviction would not make room."""
    if plan.fits:
        return
    from llmctl.planner import human_bytes  # noqa: PLC0415

    raise LlmctlError(
        f"{plan.model} does not fit on {plan.backend}'s GPUs: short by {human_bytes(plan.short_by)}"
        " even after every allowed eviction; nothing was changed",
        details=[*plan.notes, *(f"GPU {g.index}: free {human_bytes(g.free_now)}, needs {human_bytes(g.needs)}"
                                for g in plan.gpus if g.target)],
        hint="llmctl plan shows the numbers; a smaller context or quantisation, fewer gpu_layers, or "
        "unpinning a backend makes room.",
    )  # fmt: skip


def evict(plan: Plan, switching: str, paths: Paths) -> tuple[tuple[str, ...], list[int]]:
    """Carry out the plan's evictions, in order; return the units stopped (to restart on
    rollback) and the processes they had (whose GPU memory must come back)."""
    stopped: list[str] = []
    pids: list[int] = []
    for eviction in plan.evictions:
        if eviction.backend == switching:
            continue  # the switch itself stops it
        if eviction.action == "stop":
            state = systemd.show([eviction.unit]).get(eviction.unit)
            if state is not None and state.running:
                pids.extend(procs.cgroup_pids(state.control_group) or [state.main_pid])
            systemd.stop([eviction.unit])
            stopped.append(eviction.unit)
        elif eviction.action in ("unload", "sleep"):
            _release(eviction, paths)
    return tuple(stopped), pids


def _memory_waiter(
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


def _release(eviction: Eviction, paths: Paths) -> None:
    """Unload an Ollama model (asynchronous: waits until /api/ps no longer lists it) or put a
    vLLM to sleep, through the backend's own API."""
    from llmctl.backends import ollama, vllm  # noqa: PLC0415

    unit = eviction.unit
    state = systemd.show([unit]).get(unit)
    if state is None or not state.running:
        return
    url = _unit_url(unit, paths)
    with probe_client(30.0) as client:
        if eviction.action == "unload" and eviction.model:
            ollama.unload(client, url, eviction.model, timeout=60)
        elif eviction.action == "sleep":
            vllm.sleep(client, url, 1)


def _unit_url(unit: str, paths: Paths) -> str:
    from llmctl.stack import stack_from_installed  # noqa: PLC0415

    for installed in stack_from_installed(paths.config_home):
        if installed.unit == unit:
            return installed.url
    raise LlmctlError(f"{unit} is not installed; cannot ask it to free memory")


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


def _switch_ollama(
    loaded: LoadedConfig,
    paths: Paths,
    name: str,
    model_id: str,
    timeout: float | None,
    wait_lock: bool,
    on_phase: Callable[[str, float], None] | None,
    on_message: Callable[[str], None] | None,
    plan_fn: Callable[[dict[str, str]], Plan] | None,
    gpu_source: GpuSource | None,
) -> SwitchResult:
    """Ollama serves every model assigned to it: a switch loads one (and unloads what the plan
    says must make room). No unit or route changes, so there is nothing to snapshot."""
    backend = loaded.config.backends[name]
    model = loaded.config.models[model_id]
    assert model.source is not None
    unit = next(u for u in stack_units(loaded.config) if u.name == name)
    result = SwitchResult(backend=name, old=None, new=model_id)
    phase = _Phases(result, on_phase)
    with state_lock(paths.state_dir, "switch", wait=wait_lock, on_wait=on_message):
        plan = None
        if plan_fn is not None:
            with phase("plan"):
                plan = plan_fn(effective_serving(loaded.config, load_serving(paths.state_dir)))
            refuse_if_unfit(plan)
        unload = [e.model for e in (plan.evictions if plan else ()) if e.action == "unload" and e.model]
        stopped, stopped_pids = evict(plan, name, paths) if plan is not None else ((), [])
        try:
            memory_back = _memory_waiter(plan, gpu_source, name)
            if memory_back is not None:
                with phase("gpu-free"):
                    memory_back(stopped_pids)
            with phase("load"), probe_client(30.0) as client:
                load_into_ollama(
                    client, unit.url, model.source, getattr(backend, "keep_alive", None), unload,
                    timeout or unit.start_timeout,
                )  # fmt: skip
        except LlmctlError:
            record_history(paths, result, ok=False)
            systemd.start(list(stopped), block=False)  # what was stopped for room comes back
            raise
        record_history(paths, result, ok=True)
    return result


def _apply(
    loaded: LoadedConfig,
    paths: Paths,
    name: str,
    model_id: str,
    serving: dict[str, str],
    phase: _Phases,
    intent: transaction.Intent,
    render_options: Callable[[dict[str, str]], RenderOptions],
    timeout: float | None,
    progress: Progress | None,
    memory_back: Callable[[list[int]], None] | None,
) -> None:
    """Phases 3 to 7 (see the module docstring); raises on the first failure."""
    with phase("routes-out"):
        others = {k: v for k, v in _all_serving(loaded, serving).items() if k != name}
        _set_routes(loaded, paths, others)
    intent = transaction.advance(paths.state_dir, intent, "routes-out")
    unit = next(u for u in stack_units(loaded.config, {**serving, name: model_id}) if u.name == name)
    with phase("stop"):
        state = systemd.show([unit.unit]).get(unit.unit)
        pids = procs.cgroup_pids(state.control_group) if state and state.running else []
        systemd.stop([unit.unit])
        _wait_stopped(unit, pids)
    if memory_back is not None:
        with phase("gpu-free"):
            memory_back(pids)
    intent = transaction.advance(paths.state_dir, intent, "stopped")
    new_serving = {**serving, name: model_id}
    with phase("start"):
        save_serving(paths.state_dir, new_serving)
        stack = render_stack(loaded.config, render_options(new_serving))
        # The gateway file is left as it is (old route out) until the model is verified.
        stack.files.pop(GATEWAY_FILE, None)
        _install(stack, paths)
        systemd.reset_failed([unit.unit])
        job = systemd.start_job(unit.unit)
        with probe_client(5.0) as client:
            wait_serving(unit, timeout or unit.start_timeout, client, progress, job=job)
    intent = transaction.advance(paths.state_dir, intent, "started")
    with phase("verify"):
        _one_token(unit, model_id, timeout=60)
    with phase("routes-in"):
        _set_routes(loaded, paths, _all_serving(loaded, new_serving))


def _all_serving(loaded: LoadedConfig, serving: dict[str, str]) -> dict[str, str]:
    """Recorded choices over the config's `model:` for every backend."""
    out = {n: m for n, b in loaded.config.backends.items() if (m := getattr(b, "model", None))}
    out.update(serving)
    return out
