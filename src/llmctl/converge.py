"""Bringing installed units to serving: the checks before a start, the start jobs, the wait.

What `up`, `restart`, `rollback` and `recover` share once the files are in place. It reads no
config (no pydantic, no jinja2): `up NAME` on an applied config (llmctl.quick_up) starts
units from what the last `up` recorded, with these same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from llmctl import procs, systemd
from llmctl.backends.base import Health, Probe, probe_client
from llmctl.errors import ExitCode, LlmctlError
from llmctl.executables import resolve_executable
from llmctl.gateway_runtime.interpreter import METRICS_MODULE, can_import, litellm_python
from llmctl.readiness import poll_interval, probe_once
from llmctl.render.names import GATEWAY_FILE, UNIT_SUBDIR
from llmctl.signatures import match_lines
from llmctl.stack import StackUnit

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


def preflight(
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
    start = clock()
    try:
        if job is not None:
            # A small model serves before this: look at the unit once its job has ended,
            # instead of a `show` (~7 ms) while it runs and another after. systemctl exits 0
            # once the start job is done: the unit is active, its readiness gate passed.
            job.wait(JOB_PROGRESS_INTERVAL)
            if job.succeeded and _serves(unit, client):
                return clock() - start
        return _watch(unit, timeout, client, progress, clock, job, start)
    finally:
        if job is not None:
            job.close()


@contextmanager
def closing_jobs(jobs: dict[str, systemd.StartJob]) -> Iterator[None]:
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


def _watch(
    unit: StackUnit,
    timeout: float,
    client: object,
    progress: Progress | None,
    clock: Callable[[], float],
    job: systemd.StartJob | None,
    start: float,
) -> float:
    """Look at the unit until it serves, fails, or the time is up."""
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


def _serves(unit: StackUnit, client: object) -> bool:
    """Of an active unit: Type=notify ones are ready when active; the others when probed."""
    if unit.ready_when_active:
        return True
    return probe_once(client, unit.kind, unit.url, unit.model).health is Health.OK  # type: ignore[arg-type]


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
    with probe_client(5.0) as client, closing_jobs(jobs):
        # Backends load in parallel; the gateway goes once they serve; the supervisor last.
        backends = [p for p in plan if not p[0].is_gateway and not p[0].ready_when_active]
        gateway = [p for p in plan if p[0].is_gateway]
        for group in (backends, gateway, [p for p in plan if p[0].ready_when_active]):
            if not group:
                continue
            # A failed unit's state goes before its new start (the start-limit count is
            # cleared when systemd refuses a start for it: _wait_started).
            failed = [
                u.unit
                for u, _ in group
                if (st := states.get(u.unit)) is not None and st.active_state == "failed"
            ]
            systemd.reset_failed(failed)
            for unit, action in group:
                if action == "reloaded":
                    start = time.monotonic()
                    systemd.reload([unit.unit])  # synchronous: the new routes serve when it returns
                    outcomes.append(UnitOutcome(unit.unit, action, time.monotonic() - start))
                    continue
                jobs[unit.unit] = systemd.start_job(unit.unit, restart=action == "restarted")
            for unit, action in group:
                if action != "reloaded":
                    job = jobs.pop(unit.unit)
                    waited = _wait_started(unit, action, timeout or unit.start_timeout, client, progress, job)
                    outcomes.append(UnitOutcome(unit.unit, action, waited))
    return outcomes


def _wait_started(
    unit: StackUnit,
    action: str,
    timeout: float,
    client: object,
    progress: Progress | None,
    job: systemd.StartJob,
) -> float:
    """wait_serving; once more if systemd refused the start for its start limit.

    StartLimitBurst= starts within StartLimitIntervalSec= (the supervisor's restarts and every
    `up` count): a start asked for by hand clears that count and goes, as `systemctl
    reset-failed` before each start would, without a systemctl call on every `up`."""
    start = time.monotonic()
    job.wait(JOB_PROGRESS_INTERVAL)  # a refused start fails at once
    if job.finished and not job.succeeded:
        state = systemd.show([unit.unit]).get(unit.unit)
        if state is not None and state.result == "start-limit-hit":
            job.close()
            systemd.reset_failed([unit.unit])
            job = systemd.start_job(unit.unit, restart=action == "restarted")
    wait_serving(unit, timeout, client, progress, job=job)
    return time.monotonic() - start
