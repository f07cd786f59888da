"""`llmctl status`: one row per unit, from one `systemctl show` and parallel health probes.

JSON (data of the result envelope, STATUS_SCHEMA_VERSION bumps on incompatible change):
    {"schema": 1, "healthy": bool, "units": [{"name", "unit", "kind", "active_state",
     "sub_state", "main_pid", "uptime_s", "restarts", "health", "health_detail",
     "probe_latency_ms", "models", "port", "rss_bytes", "cpu_seconds", "gpu_memory_bytes",
     "last_event": {"time", "event", "probe", "reason"} | null}]}
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import procs, systemd
from llmctl.backends import adapter_for
from llmctl.backends.base import Health, Probe, probe_client
from llmctl.errors import ExitCode, LlmctlError
from llmctl.kinds import Kind
from llmctl.paths import Paths
from llmctl.readiness import probe_once
from llmctl.stack import StackUnit, stack_from_installed, stack_units

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmctl.backends.http import LoopbackClient
    from llmctl.config.schema import Config

STATUS_SCHEMA_VERSION = 1
# What a machine where NVML can work has: the NVIDIA kernel driver's control device or /proc
# entry, or WSL2's GPU paravirtualisation device (NVML through /usr/lib/wsl/lib there).
NVIDIA_DRIVER_SIGNS = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")


@dataclass(frozen=True)
class UnitStatus:
    name: str
    unit: str
    kind: str
    active_state: str
    sub_state: str
    main_pid: int | None
    uptime_s: float | None
    restarts: int
    health: str
    health_detail: str
    probe_latency_ms: float | None
    models: list[str]
    port: int
    rss_bytes: int | None
    cpu_seconds: float | None
    gpu_memory_bytes: int | None
    last_event: dict[str, object] | None = None  # the supervisor's newest event about it
    runbook: str | None = None  # for a unit that is not healthy: the runbook its journal points to
    # gateway.on_demand: the router's view of this backend (loaded, available, queue, in_flight,
    # idle_s: seconds since each model's last request through the gateway).
    on_demand: dict[str, object] | None = None


@dataclass(frozen=True)
class StackStatus:
    units: list[UnitStatus]

    @property
    def healthy(self) -> bool:
        return all(u.health == Health.OK for u in self.units)

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": STATUS_SCHEMA_VERSION,
            "healthy": self.healthy,
            "units": [asdict(u) for u in self.units],
        }


def unhealthy(result: StackStatus) -> LlmctlError:
    """The failure `status --json` reports: which units are not healthy, and why."""
    bad = [u for u in result.units if u.health != "ok"]
    return LlmctlError(
        f"not healthy: {', '.join(u.name for u in bad)}",
        details=[
            f"{u.name}: {u.health_detail}"
            + (f" (llmctl runbook {u.runbook} --backend {u.name})" if u.runbook else "")
            for u in bad
        ],
        hint="llmctl status shows every unit; llmctl logs NAME shows why one is not serving.",
        exit_code=ExitCode.NOT_RUNNING,
    )


def _health(unit: StackUnit, state: systemd.UnitState | None, probe: Probe | None) -> tuple[Health, str]:
    if state is None or not state.exists:
        return Health.DOWN, "not installed (run llmctl up)"
    if state.active_state in ("inactive", "failed"):
        return Health.DOWN, f"{state.active_state} ({state.result})"
    if unit.ready_when_active:
        # Type=notify: active means READY=1 came; its STATUS= line says what it sees.
        if state.active_state == "active":
            return Health.OK, state.status_text or "active"
        return Health.LOADING, state.status_text or state.active_state
    if probe is None:
        return Health.UNKNOWN, "not probed"
    if state.active_state == "activating" and probe.health is not Health.OK:
        return Health.LOADING, probe.detail
    return probe.health, probe.detail


def collect_current(
    paths: Paths,
    config_path: Path,
    load: Callable[[], tuple[Config, dict[str, str]]],
    *,
    probe_timeout: float = 3.0,
    shown: systemd.ShowJob | None = None,
) -> StackStatus:
    """`collect` as `llmctl status` runs it: when the config is the one the installed units were
    rendered from (up and rollback keep a copy, llmctl.state.applied_config_file), the units
    say everything the config would, so they are judged as installed and the config is never
    loaded (building its schema is most of a status's time). Otherwise `load()` gives the config
    and what switch chose, and an edit not yet applied reads as a note. `shown`: a `show`
    already under way (the quick status's), used when it covers the units judged."""
    from llmctl.state import applied_config_file  # noqa: PLC0415

    try:
        unchanged = config_path.read_bytes() == applied_config_file(paths.state_dir).read_bytes()
    except OSError:
        unchanged = False
    if unchanged:
        return collect_installed(
            paths.config_home, state_dir=paths.state_dir, probe_timeout=probe_timeout, shown=shown
        )
    config, serving = load()
    return collect(
        config, serving, config_home=paths.config_home, state_dir=paths.state_dir, probe_timeout=probe_timeout
    )


def collect_installed(
    config_home: Path,
    *,
    state_dir: Path | None = None,
    probe_timeout: float = 3.0,
    shown: systemd.ShowJob | None = None,
) -> StackStatus:
    """State and health of every installed unit, from the unit files alone (no config)."""
    units = stack_from_installed(config_home)
    names = {u.name for u in units}
    # A switch's bridge (llmctl-NAME-bridge.service) is part of NAME's switch, not a unit of its own.
    units = [u for u in units if not (u.name.endswith("-bridge") and u.name.removesuffix("-bridge") in names)]
    routed = _routed_now(config_home)
    state_dir = state_dir or Paths.from_env().state_dir
    many = [u for u in units if u.kind in set(Kind) and adapter_for(Kind(u.kind)).serves_many]
    assigned = _assigned_models(state_dir, {u.name for u in many}) if many else {}

    def models(unit: StackUnit) -> tuple[str, ...]:
        if unit.is_gateway:
            return routed
        # A many-model server (Ollama) names none in its unit: the config assigns them.
        return assigned.get(unit.name, unit.models)

    units = [replace(u, models=models(u)) for u in units]
    return _judge(units, {}, state_dir, probe_timeout, shown)


def _assigned_models(state_dir: Path, backends: set[str]) -> dict[str, tuple[str, ...]]:
    """The model ids the applied config assigns to these backends (`models.ID.backend`), read
    from its copy as plain YAML: the copy is the config the units came from, already valid."""
    import yaml  # noqa: PLC0415

    from llmctl.state import applied_config_file  # noqa: PLC0415

    try:
        data = yaml.safe_load(applied_config_file(state_dir).read_text(encoding="utf-8"))
        models = data.get("models") or {}
        pairs = [(str(mid), m.get("backend")) for mid, m in models.items() if isinstance(m, dict)]
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {name: tuple(sorted(mid for mid, b in pairs if b == name)) for name in backends}


def _routed_now(config_home: Path) -> tuple[str, ...]:
    """The model ids the installed gateway file routes (its `- model_name: ID` lines, as llmctl
    writes them; yaml is not needed)."""
    from llmctl.render.names import GATEWAY_FILE  # noqa: PLC0415

    try:
        text = (config_home / GATEWAY_FILE).read_text(encoding="utf-8")
    except OSError:
        return ()
    prefix = "- model_name: "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return tuple(sorted({line.removeprefix(prefix).strip().strip("'\"") for line in lines}))


def collect(
    config: Config,
    serving: dict[str, str] | None = None,
    *,
    config_home: Path | None = None,
    state_dir: Path | None = None,
    probe_timeout: float = 3.0,
) -> StackStatus:
    """State and health of every configured unit.

    Health is judged against what is installed (the unit files say which model must serve),
    so a config edited but not yet applied reads as a note, not as a failure."""
    wanted = stack_units(config, serving)
    installed = {u.unit: u for u in stack_from_installed(config_home)} if config_home else {}
    units = []
    pending: dict[str, str] = {}
    for want in wanted:
        there = installed.get(want.unit)
        if there is not None and there.model != want.model and not want.is_gateway:
            pending[want.unit] = f"the config wants {want.model}, not applied yet (llmctl diff; llmctl up)"
            want = replace(want, model=there.model, models=there.models)  # noqa: PLW2901 - judged by what runs
        units.append(want)
    return _judge(units, pending, state_dir, probe_timeout)


def _judge(
    units: list[StackUnit],
    pending: dict[str, str],
    state_dir: Path | None,
    probe_timeout: float,
    shown: systemd.ShowJob | None = None,
) -> StackStatus:
    """One `systemctl show` for all units (`shown`, when one already runs for them), then a row
    per unit. Everything else runs while `show` does, in parallel: each unit's probe and vLLM's
    sleep state (a stopped unit's is refused at once, and only running units' count), NVML
    and the supervisor's last events."""
    names = [u.unit for u in units]
    probed = [u for u in units if not u.ready_when_active]
    with ThreadPoolExecutor(max_workers=len(probed) + 4) as pool:
        # Started first: the rest (the probe client's imports too) runs while systemctl does.
        if shown is not None and shown.covers(names):
            states_future = pool.submit(_states_of, shown, names)
        else:
            states_future = pool.submit(systemd.show, names)
        with probe_client(probe_timeout) as client:
            # Then the probes, the longest wait besides systemctl; then what is quick.
            futures = {u.unit: pool.submit(_look, client, u) for u in probed}
            gpu_future = pool.submit(_gpu_memory)
            events_future = pool.submit(
                _last_events, state_dir or Paths.from_env().state_dir, {u.name for u in units}
            )
            states = states_future.result()
            # One pass for every unit's processes (without a mounted cgroup tree that is a
            # /proc scan), while the probes wait for their answers.
            pids_future = pool.submit(
                procs.cgroups_pids, [s.control_group for s in states.values() if s.running]
            )
            active = {unit for unit, state in states.items() if state.running}
            looks = {unit: future.result() for unit, future in futures.items() if unit in active}
        probes = {unit: probe for unit, (probe, _) in looks.items()}
        asleep = {unit for unit, (_, sleeping) in looks.items() if sleeping}
        gpu_by_pid = gpu_future.result() if probes else None
        last_events = events_future.result()
        pids_of = pids_future.result()
    now_us = time.monotonic_ns() // 1000
    router = _router_view(units, states)
    rows = []
    for unit in units:
        state = states.get(unit.unit)
        probe = probes.get(unit.unit)
        health, detail = _health(unit, state, probe)
        view = router.get(unit.name)
        if view is not None and state is not None and state.active_state == "inactive":
            # Unloaded by the router (idle, or to make room): the next request loads it.
            health, detail = (
                Health.OK,
                "unloaded; loads when a request asks for "
                + ", ".join(
                    str(m)
                    for m in view.get("available", [])  # type: ignore[attr-defined]
                ),
            )
        elif view is not None and view.get("queue"):
            detail = f"{detail}; {view['queue']} request(s) waiting for a load"
        runbook = _runbook_for(unit.unit, state) if health is not Health.OK else None
        if unit.unit in asleep and health is Health.OK:
            # Put to sleep to make room (its weights in CPU RAM): not serving until woken.
            health, detail = Health.LOADING, f"asleep (llmctl switch {unit.model} wakes it)"
        if unit.unit in pending:
            detail = f"{detail}; {pending[unit.unit]}"
        running = state is not None and state.running
        use = procs.usage(pids_of.get(state.control_group, [])) if running and state else None
        uptime = (
            (now_us - state.active_since_monotonic_us) / 1e6
            if state and state.active_state == "active" and state.active_since_monotonic_us
            else None
        )
        served = list(probe.models) if probe and probe.models else list(unit.models)
        rows.append(
            UnitStatus(
                name=unit.name,
                unit=unit.unit,
                kind=unit.kind,
                active_state=state.active_state if state else "not-found",
                sub_state=state.sub_state if state else "",
                main_pid=state.main_pid or None if state else None,
                uptime_s=round(uptime, 1) if uptime is not None else None,
                restarts=state.n_restarts if state else 0,
                health=health.value,
                health_detail=detail,
                probe_latency_ms=round(probe.latency_ms, 1)
                if probe and probe.latency_ms is not None
                else None,
                models=served,
                port=unit.port,
                rss_bytes=use.rss_bytes if use else None,
                cpu_seconds=round(use.cpu_seconds, 2) if use else None,
                gpu_memory_bytes=_gpu_bytes(use, gpu_by_pid),
                last_event=last_events.get(unit.name),
                runbook=runbook,
                on_demand=view,
            )
        )
    return StackStatus(rows)


def _states_of(shown: systemd.ShowJob, names: list[str]) -> dict[str, systemd.UnitState]:
    wanted = set(names)
    return {unit: state for unit, state in shown.result().items() if unit in wanted}


def _look(client: LoopbackClient, unit: StackUnit) -> tuple[Probe, bool]:
    """The unit's probe, and whether it sleeps (every backend's adapter says; only vLLM asks)."""
    probe = probe_once(client, unit.kind, unit.url, unit.model)
    sleeping = unit.kind in set(Kind) and adapter_for(Kind(unit.kind)).is_sleeping(client, unit.url) is True
    return probe, sleeping


def _router_view(
    units: list[StackUnit], states: dict[str, systemd.UnitState]
) -> dict[str, dict[str, object]]:
    """What a running router says per backend (gateway.on_demand), else nothing."""
    router = next((u for u in units if u.is_router), None)
    state = states.get(router.unit) if router is not None else None
    if router is None or state is None or state.active_state != "active":
        return {}
    from llmctl.router import client  # noqa: PLC0415

    return client.state(router.port) or {}


def _gpu_memory() -> dict[int, int] | None:
    # No driver, no NVML: None without importing llmctl.gpu and pynvml (which held the GIL for
    # ~30 ms, while the probes wanted it).
    if not any(Path(sign).exists() for sign in NVIDIA_DRIVER_SIGNS):
        return None
    from llmctl import gpu  # noqa: PLC0415 - imported in a worker, while systemctl runs

    return gpu.memory_by_pid()


def _runbook_for(unit: str, state: systemd.UnitState | None) -> str | None:
    """The runbook a failing unit's recent journal lines point to (a known failure signature)."""
    if state is None or not state.exists:
        return None
    from llmctl.signatures import match_lines  # noqa: PLC0415

    found = match_lines(systemd.journal_tail(unit, 30))
    return found[0].signature.runbook if found else None


def _last_events(state_dir: Path, names: set[str]) -> dict[str, dict[str, object]]:
    from llmctl.supervisor import EVENTS_FILE  # noqa: PLC0415

    if not (state_dir / EVENTS_FILE).is_file():
        return {}  # no supervisor event yet: nothing to import and parse
    from llmctl.supervisor import events  # noqa: PLC0415

    return {
        name: {"time": e.time, "event": e.event, "probe": e.probe, "reason": e.reason}
        for name, e in events.last_per_backend(state_dir, names).items()
    }


def _gpu_bytes(use: procs.Usage | None, by_pid: dict[int, int] | None) -> int | None:
    if use is None or by_pid is None:
        return None  # not running, or no NVML: cannot tell
    return sum(by_pid.get(pid, 0) for pid in use.pids)


def _human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return "-"


def _human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_table(status: StackStatus) -> str:
    headers = ["NAME", "KIND", "STATE", "PID", "UP", "RESTARTS", "HEALTH", "PORT", "RSS", "CPU", "MODELS"]
    rows = []
    for u in status.units:
        latency = (
            f" {u.probe_latency_ms:.0f}ms" if u.probe_latency_ms is not None and u.health == "ok" else ""
        )
        rows.append([
            u.name, u.kind, f"{u.active_state}/{u.sub_state}" if u.sub_state else u.active_state,
            str(u.main_pid or "-"), _human_duration(u.uptime_s), str(u.restarts), u.health + latency,
            str(u.port), _human_bytes(u.rss_bytes),
            f"{u.cpu_seconds:.1f}s" if u.cpu_seconds is not None else "-",
            ",".join(u.models) or "-",
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [headers, *rows]
    ]
    problems = [
        f"  {u.name}: {u.health_detail}"
        + (f" (llmctl runbook {u.runbook} --backend {u.name})" if u.runbook else "")
        for u in status.units
        if u.health != "ok"
    ]
    notes = [
        f"  {u.name}: {u.health_detail}" for u in status.units if u.health == "ok" and "; " in u.health_detail
    ]
    seen = [
        f"  {u.name}: {_event_time(str(u.last_event['time']))} {u.last_event['event']}"
        + (f" [{u.last_event['probe']}]" if u.last_event.get("probe") else "")
        + f": {u.last_event['reason']}"
        for u in status.units
        if u.last_event
    ]
    return "\n".join(
        lines
        + (["", "not healthy:", *problems] if problems else [])
        + (["", "notes:", *notes] if notes else [])
        + (["", "last supervisor event (llmctl events):", *seen] if seen else [])
    )


def _event_time(iso: str) -> str:
    from datetime import datetime  # noqa: PLC0415

    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso
