"""up, down, restart: install the rendered units and drive them through systemd.

`up` checks everything it can before it writes anything (executables, model files, ports),
installs only what changed, and starts or restarts only units that are stopped or whose files
changed, so running it twice does nothing the second time. Backends load in parallel; the
gateway starts after them. Waiting ends early when a unit fails, and the failure is shown
with the unit's state and its last journal lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmctl import procs, systemd, transaction
from llmctl.backends import adapter_for
from llmctl.backends.base import Health, Probe, probe_client
from llmctl.config.checks import resolve_executable
from llmctl.config.load import LoadedConfig
from llmctl.config.schema import Config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.gateway_runtime.interpreter import METRICS_MODULE, can_import, litellm_python
from llmctl.install import ChangeKind, FileChange, apply_changes, compare, installed_llmctl_units
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.readiness import poll_interval, probe_once
from llmctl.render.units import (
    GATEWAY_FILE,
    GATEWAY_UNIT,
    REDIS_CONF_FILE,
    REDIS_UNIT,
    TARGET,
    UNIT_SUBDIR,
    RenderedStack,
    keyed_backends,
    unit_name,
)
from llmctl.secrets import ensure_backend_key, ensure_gateway_key, ensure_redis_password
from llmctl.signatures import match_lines
from llmctl.stack import StackUnit, select, stack_units
from llmctl.state import applied_config_file, record_applied

Progress = Callable[[StackUnit, str, float], None]
JOURNAL_LINES = 20
# With a start job to wake the wait, look at the unit only this often (for progress lines).
JOB_PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class UnitOutcome:
    unit: str
    action: str  # started | restarted | unchanged | stopped | removed
    seconds: float = 0.0
    detail: str = ""


@dataclass
class UpResult:
    outcomes: list[UnitOutcome] = field(default_factory=list)
    files: list[FileChange] = field(default_factory=list)
    gateway_key_created: bool = False
    backend_keys_created: list[str] = field(default_factory=list)  # backend names
    redis_password_created: bool = False  # gateway.cache: a new password (redis.env)
    snapshot: str | None = None  # taken before changing anything


def _preflight(
    units: list[StackUnit], states: dict[str, systemd.UnitState], litellm_metrics: bool = False
) -> None:
    """Refuse before changing anything: missing executables, model files, ports taken, and
    LiteLLM without the module its metrics need (its start would fail on the import)."""
    problems = []
    taken = False
    for unit in units:
        entry = resolve_executable(unit.command)
        if entry is None:
            problems.append(f"{unit.name}: executable '{unit.command}' not found")
        elif (
            unit.is_gateway
            and litellm_metrics
            and not can_import(python := litellm_python(entry), METRICS_MODULE)
        ):
            problems.append(
                f"gateway: gateway.litellm_metrics needs {METRICS_MODULE}, which LiteLLM's python ({python}) "
                f"cannot import; install it (`{python} -m pip install prometheus-client`) or set "
                "gateway.litellm_metrics: false"
            )
        if unit.model_file is not None and not unit.model_file.exists():
            problems.append(f"{unit.name}: model file {unit.model_file} does not exist")
        # Ours if the unit runs, or the gateway's socket unit holds the port for it.
        ours = any(
            (st := states.get(name)) is not None and st.running for name in (unit.unit, *unit.companions)
        )
        if not ours and procs.port_in_use(unit.host, unit.port):
            owner = procs.port_owner(unit.port) or "another process"
            problems.append(f"{unit.name}: port {unit.port} is already in use by {owner}")
            taken = True
    if problems:
        raise LlmctlError(
            f"cannot start: {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was changed",
            details=problems,
            hint="Fix the config (llmctl validate --strict) or free the port, then run llmctl up again.",
            # A port another process holds is this machine's state, not a bad config or argument.
            exit_code=ExitCode.FAILED if taken else ExitCode.USAGE,
        )


def failure_report(unit: StackUnit, why: str) -> LlmctlError:
    state = systemd.show([unit.unit]).get(unit.unit)
    details = []
    if state is not None:
        details.append(
            f"{unit.unit}: ActiveState={state.active_state} SubState={state.sub_state} "
            f"Result={state.result} NRestarts={state.n_restarts}"
        )
    lines = systemd.journal_tail(unit.unit, JOURNAL_LINES)
    if lines:
        details.append(f"last {len(lines)} journal lines:")
        details.extend(f"  {line}" for line in lines)
    # A switch's bridge unit (llmctl-NAME-bridge.service) is backend NAME's server too.
    backend = unit.name.removesuffix("-bridge") if unit.unit.endswith("-bridge.service") else unit.name
    hint = f"journalctl --user-unit {unit.unit}; systemctl --user status {unit.unit}"
    if backend == unit.name:
        hint = f"llmctl logs {unit.name}; systemctl --user status {unit.unit}"
    matches = match_lines(lines)
    if matches:
        known = matches[0].signature
        details.append(f"recognised: {known.summary} ({matches[0].line})")
        hint = f"llmctl runbook {known.runbook} --backend {backend}"
    return LlmctlError(f"{unit.name} did not become ready: {why}", details=details, hint=hint)


def wait_serving(
    unit: StackUnit,
    timeout: float,
    client: object,
    progress: Progress | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    job: systemd.StartJob | None = None,
) -> float:
    """Wait until systemd says active (its readiness gate passed) and a probe says ok.

    With the unit's start `job` (`systemd.start_job`), the wait wakes the moment the job
    finishes and looks less often meanwhile (for progress only); the job is closed on return."""
    try:
        return _wait_serving(unit, timeout, client, progress, clock, job)
    finally:
        if job is not None:
            job.close()


@contextmanager
def _closing(jobs: dict[str, systemd.StartJob]) -> Iterator[None]:
    """Close the start jobs nobody waited on (an earlier unit failed): the units carry on."""
    try:
        yield
    finally:
        for job in jobs.values():
            job.close()


def _pause(job: systemd.StartJob | None, waited: float) -> None:
    if job is None or job.finished:
        time.sleep(poll_interval(waited))
    else:
        job.wait(max(poll_interval(waited), JOB_PROGRESS_INTERVAL))


def _wait_serving(
    unit: StackUnit,
    timeout: float,
    client: object,
    progress: Progress | None,
    clock: Callable[[], float],
    job: systemd.StartJob | None,
) -> float:
    start = clock()
    seen_activating = False
    while True:
        state = systemd.show([unit.unit])[unit.unit]
        waited = clock() - start
        # While the start job runs, what systemd shows may still be the old process (a restart
        # not begun yet) or the gap between stop and start: judge only once it has ended.
        settled = job is None or job.finished
        if settled and state.active_state == "active" and unit.ready_when_active:
            return waited  # Type=notify: active means it sent READY=1
        if settled and state.active_state == "active":
            probe = probe_once(client, unit.kind, unit.url, unit.model)  # type: ignore[arg-type]
            if probe.health is Health.OK:
                return waited
            detail = probe.detail
        elif settled and (
            state.active_state == "failed"
            or (state.active_state == "inactive" and (seen_activating or waited > 2))
        ):
            raise failure_report(unit, f"the unit is {state.active_state} ({state.result})")
        elif settled and state.sub_state == "auto-restart":
            raise failure_report(unit, "the server exited and systemd is restarting it")
        elif state.active_state in ("active", "deactivating", "inactive"):
            detail = "restarting"  # the job has not started the new process yet
        else:
            seen_activating = seen_activating or state.active_state == "activating"
            if unit.ready_when_active:
                detail = "starting (its first round of probes)"
            else:
                probe = probe_once(client, unit.kind, unit.url, unit.model)  # type: ignore[arg-type]
                detail = _loading_detail(probe)
        if progress is not None:
            progress(unit, detail, waited)
        if waited >= timeout:
            raise failure_report(unit, f"not ready after {waited:.0f} s (last probe: {detail})")
        _pause(job, waited)


def _loading_detail(probe: Probe) -> str:
    if probe.health is Health.DOWN and probe.detail == "connection refused":
        return "starting (not listening yet)"
    return probe.detail


def _states_of(
    units: list[StackUnit], known: dict[str, systemd.UnitState] | None
) -> dict[str, systemd.UnitState]:
    """The units' states: from `known` when it has them all, else a `show` of them."""
    if known is None or any(u.unit not in known for u in units):
        return systemd.show([u.unit for u in units])
    return {u.unit: known[u.unit] for u in units}


def converge(
    units: list[StackUnit],
    changed: set[str],
    *,
    timeout: float | None = None,
    progress: Progress | None = None,
    states: dict[str, systemd.UnitState] | None = None,
) -> list[UnitOutcome]:
    """Bring these units to serving: start what is stopped, restart what changed, leave the rest.

    `changed` holds the paths (under $XDG_CONFIG_HOME) of files just installed. A running
    gateway whose own unit files did not change only reloads (blue/green behind the held
    socket: no request is dropped); anything else that changed restarts. `states`: what
    `systemctl show` said of them just before, when nothing was installed or stopped since.
    """
    states = _states_of(units, states)
    plan: list[tuple[StackUnit, str]] = []
    outcomes: list[UnitOutcome] = []
    failing = [u for u, st in states.items() if st.sub_state == "auto-restart" or st.active_state == "failed"]
    if failing:
        # Waiting to restart after a crash (a failed change, say): stop it, so what follows is
        # a clean start and no stale "auto-restart" state is mistaken for the new attempt.
        systemd.stop(failing)
        states = systemd.show([u.unit for u in units])
    for unit in units:
        state = states.get(unit.unit)
        unit_changed = any(f"{UNIT_SUBDIR}/{name}" in changed for name in (unit.unit, *unit.companions))
        if state is None or not state.running:
            plan.append((unit, "started"))
        elif unit_changed:
            plan.append((unit, "restarted"))
        elif unit.is_gateway and GATEWAY_FILE in changed:
            plan.append((unit, "reloaded"))
        else:
            outcomes.append(UnitOutcome(unit.unit, "unchanged"))
    jobs: dict[str, systemd.StartJob] = {}
    with probe_client(5.0) as client, _closing(jobs):
        # Backends load in parallel; the gateway goes once they serve; the supervisor last.
        backends = [p for p in plan if not p[0].is_gateway and not p[0].ready_when_active]
        gateway = [p for p in plan if p[0].is_gateway]
        for group in (backends, gateway, [p for p in plan if p[0].ready_when_active]):
            if not group:
                continue
            systemd.reset_failed([u.unit for u, _ in group])
            for unit, action in group:
                if action == "reloaded":
                    start = time.monotonic()
                    systemd.reload([unit.unit])  # synchronous: the new routes serve when it returns
                    outcomes.append(UnitOutcome(unit.unit, action, time.monotonic() - start))
                    continue
                jobs[unit.unit] = systemd.start_job(unit.unit, restart=action == "restarted")
            for unit, action in group:
                if action != "reloaded":
                    waited = wait_serving(
                        unit, timeout or unit.start_timeout, client, progress, job=jobs.pop(unit.unit)
                    )
                    outcomes.append(UnitOutcome(unit.unit, action, waited))
    return outcomes


def up(
    loaded: LoadedConfig,
    stack: RenderedStack,
    paths: Paths,
    names: tuple[str, ...] = (),
    *,
    timeout: float | None = None,
    wait_lock: bool = True,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
    serving: dict[str, str] | None = None,
    rollback_on_failure: bool = True,
) -> UpResult:
    """Install what changed and bring the chosen units to serving, as one transaction.

    With changes, a snapshot is taken first; if a unit then fails to become ready, the
    snapshot is restored and serving resumes (unless rollback_on_failure is off, which keeps
    the failed state for debugging).
    """
    from llmctl import recovery, snapshots  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    all_units = stack_units(loaded.config, serving)
    chosen = select(all_units, names)
    result = UpResult()
    with state_lock(paths.state_dir, "up", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message)
        states = systemd.show([name for u in all_units for name in (u.unit, *u.companions)])
        _preflight(chosen, states, loaded.config.gateway.litellm_metrics)
        changes = compare(stack, paths.config_home)
        result.files = [c for c in changes if c.kind is not ChangeKind.UNCHANGED]
        intent = None
        if result.files:
            applied = applied_config_file(paths.state_dir)
            snapshot = snapshots.take(
                paths,
                loaded.path,
                reason="before up",
                command="up",
                keep=loaded.config.snapshots.keep,
                config_content=applied if applied.is_file() else None,
            )
            result.snapshot = snapshot.id
            intent = transaction.begin(paths.state_dir, "up", snapshot.id, tuple(u.unit for u in chosen))
            intent = transaction.advance(paths.state_dir, intent, "snapshot-taken")
        try:
            removed = [c.path.rsplit("/", 1)[-1] for c in changes if c.kind is ChangeKind.REMOVED]
            if removed:
                # Units whose backend left the config: stop them before their files go.
                systemd.stop(removed)
                result.outcomes.extend(UnitOutcome(u, "removed") for u in removed)
            if any(u.is_gateway for u in chosen):
                result.gateway_key_created = ensure_gateway_key(paths.gateway_env_file)
            result.backend_keys_created = ensure_backend_keys(loaded.config, paths)
            result.redis_password_created = ensure_redis(loaded.config, paths)
            apply_changes(changes, paths.config_home)
            # Before anything starts: the supervisor reads the applied config when it starts.
            record_applied(paths.state_dir, loaded.text)
            if intent:
                intent = transaction.advance(paths.state_dir, intent, "files-written")
            if result.files:
                systemd.daemon_reload()
            changed = _to_restart(result)
            # Nothing installed, stopped or reloaded since `show` above: its answer still holds.
            unchanged = not result.files and not changed
            result.outcomes.extend(
                converge(
                    chosen, changed, timeout=timeout, progress=progress, states=states if unchanged else None
                )
            )
            if not names:
                # Marks the target active, so stopping it by hand stops the stack (PartOf=).
                systemd.start([TARGET], block=False)
        except (LlmctlError, KeyboardInterrupt) as failure:
            if intent is None or not rollback_on_failure:
                if intent is not None:
                    transaction.finish(paths.state_dir)  # kept on purpose: nothing to recover
                raise
            raise recovery.roll_back_after(
                paths, intent.snapshot, failure, also=tuple(u.unit for u in chosen), on_message=on_message
            ) from None
        if intent is not None:
            transaction.finish(paths.state_dir)
    return result


def _to_restart(result: UpResult) -> set[str]:
    """The paths `converge` treats as changed: the files installed, plus the unit files of
    what must restart although its unit is the same."""
    # A new key reaches a running server and the gateway only through a restart.
    new_keys = {f"{UNIT_SUBDIR}/{unit_name(n)}" for n in result.backend_keys_created}
    if result.redis_password_created:
        new_keys.add(f"{UNIT_SUBDIR}/{REDIS_UNIT}")
    if new_keys:
        new_keys.add(f"{UNIT_SUBDIR}/{GATEWAY_UNIT}")
    changed = {c.path for c in result.files} | new_keys
    if REDIS_CONF_FILE in changed:
        # Redis reads its config only when it starts (its unit file may be unchanged).
        changed.add(f"{UNIT_SUBDIR}/{REDIS_UNIT}")
    return changed


def ensure_backend_keys(config: Config, paths: Paths) -> list[str]:
    """Create the key file of each backend started with an API key (`api_key: true`) that has
    none yet; returns their names."""
    created = []
    for name in keyed_backends(config):
        variable = adapter_for(config.backends[name].kind).api_key_variable
        assert variable is not None, "the schema allows api_key only where the adapter names a variable"
        if ensure_backend_key(paths.backend_key_file(name), name, variable):
            created.append(name)
    return created


def ensure_redis(config: Config, paths: Paths) -> bool:
    """gateway.cache: Redis's data directory (0700) and its password, in redis.env and in the
    include redis.conf names; returns True when the password is new."""
    if not config.gateway.enabled or config.gateway.cache is None:
        return False
    paths.redis_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ensure_redis_password(paths.redis_env_file, paths.redis_auth_file)


@dataclass(frozen=True)
class StopOutcome:
    unit: str
    was_running: bool
    leftover_pids: tuple[int, ...] = ()
    port_busy: bool = False


def down(
    loaded: LoadedConfig | None,
    paths: Paths,
    names: tuple[str, ...] = (),
    *,
    wait_lock: bool = True,
    on_message: Callable[[str], None] | None = None,
) -> list[StopOutcome]:
    """Stop units (all llmctl units, gateway first, by default) and confirm they are gone."""
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    systemd.require_manager()
    configured = stack_units(loaded.config) if loaded is not None else []
    # (unit, units stopped with it, host, port): the gateway's socket holds its port.
    Target = tuple[str, tuple[str, ...], str, int]
    if names:
        chosen: list[Target] = [(u.unit, u.companions, u.host, u.port) for u in select(configured, names)]
    else:
        installed = [rel.rsplit("/", 1)[-1] for rel in installed_llmctl_units(paths.config_home)]
        by_unit = {u.unit: u for u in configured}
        companions = {c for u in configured for c in u.companions}
        chosen = [(u.unit, u.companions, u.host, u.port) for u in configured]
        chosen += [
            (u, (), "", 0) for u in installed if u not in by_unit and u not in companions and u != TARGET
        ]
    chosen.reverse()  # the gateway before the backends it routes to
    outcomes = []
    with state_lock(paths.state_dir, "down", wait=wait_lock, on_wait=on_message):
        recovery.recover_pending(paths, on_message=on_message, bring_up=False)
        states = systemd.show([u for u, _, _, _ in chosen])
        if not names:
            systemd.stop([TARGET])
        for unit, with_it, host, port in chosen:
            state = states.get(unit)
            pids = procs.cgroup_pids(state.control_group) if state and state.running else []
            systemd.stop([unit, *with_it])
            leftover = _wait_gone(pids)
            busy = bool(port) and procs.port_in_use(host, port)
            outcomes.append(StopOutcome(unit, bool(state and state.running), tuple(leftover), busy))
    bad = [o for o in outcomes if o.leftover_pids or o.port_busy]
    if bad:
        raise LlmctlError(
            "stopped, but not everything is gone",
            details=[
                f"{o.unit}: "
                + ", ".join(
                    ([f"processes still alive: {list(o.leftover_pids)}"] if o.leftover_pids else [])
                    + (["its port is still bound"] if o.port_busy else [])
                )
                for o in bad
            ],
            hint="A process may have left its cgroup; check with `ss -ltnp` and `ps`.",
        )
    return outcomes


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = procs.alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = procs.alive(left)
    return left


def restart(
    loaded: LoadedConfig,
    paths: Paths,
    names: tuple[str, ...],
    *,
    timeout: float | None = None,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
    serving: dict[str, str] | None = None,
) -> list[UnitOutcome]:
    systemd.require_manager()
    chosen = select(stack_units(loaded.config, serving), names)
    outcomes = []
    from llmctl import recovery  # noqa: PLC0415 - avoids an import cycle

    with (
        state_lock(paths.state_dir, "restart", on_wait=on_message),
        probe_client(5.0) as client,
    ):
        recovery.recover_pending(paths, on_message=on_message)
        systemd.reset_failed([u.unit for u in chosen])
        jobs = {unit.unit: systemd.start_job(unit.unit, restart=True) for unit in chosen}
        with _closing(jobs):
            for unit in chosen:
                waited = wait_serving(
                    unit, timeout or unit.start_timeout, client, progress, job=jobs.pop(unit.unit)
                )
                outcomes.append(UnitOutcome(unit.unit, "restarted", waited))
    return outcomes
