"""`llmctl supervise`: the loop that runs the engine against the real world.

Each tick (at most a second apart) it collects finished probes and restarts, and when a probe
is due asks systemd about every unit in one `systemctl show`, checks whether another llmctl
holds the lock or left an intent record, samples each main process's CPU time, and lets the
engine decide. Probes and restarts run in worker threads, so the loop never waits on a hung
backend: it sends WATCHDOG=1 every tick, and systemd restarts the supervisor if it stops.
READY=1 goes out once the first round of probes has answered; STATUS= carries the one-line
summary `systemctl --user status llmctl-supervisor` shows.

The plan comes from a short-lived `llmctl supervise --print-plan` child (the config is read
there, with pydantic, which this process never imports), and again whenever the applied
config, the serving record or the config file change.

A restart takes the state lock without waiting (so it never fights a switch or an up), checks
that the unit still runs the process that was judged, stops it, waits until its processes
(and, with NVML, their GPU memory) are gone, starts it without waiting, and lets go of the
lock: the readiness gate of the unit and the next rounds tell whether it serves again.

A worker thread waits on the backends' main processes (`exits`): when one exits, a round runs
at once, and a crashed unit that systemd would restart only after RestartSec= is restarted
now when the engine allows it (`restart_unit` of a crashed unit).
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any

from llmctl import procs, systemd, transaction
from llmctl.errors import LlmctlError
from llmctl.lock import state_lock
from llmctl.supervisor import EVENTS_FILE, events, probes
from llmctl.supervisor.engine import Engine, ProbeRequest, ProbeResult, RestartOutcome, RestartRequest
from llmctl.supervisor.exits import ExitWait
from llmctl.supervisor.metrics import Metrics
from llmctl.supervisor.plan import Plan
from llmctl.supervisor.store import Store

# A backend judged hung gets this long to exit on SIGTERM before it is killed.
HUNG_STOP_GRACE = 10.0
GONE_TIMEOUT = 15.0
GPU_FREE_TIMEOUT = 10.0
MAX_TICK = 1.0
EXIT_WAIT = 30.0  # seconds one exit wait lasts before it is renewed (the pids change sooner)
EXIT_SETTLE = 0.05  # after an exit, rounds this often until systemd has noticed it too
EXIT_SETTLE_MAX = 3.0
APPLIED_CONFIG = "applied-config.yaml"
SERVING_FILE = "state.json"


def plan_argv(config_path: Path, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "llmctl", "--config", str(config_path),
        "supervise", "--print-plan", "--state-dir", str(state_dir),
    ]  # fmt: skip


def load_plan(config_path: Path, state_dir: Path) -> Plan:
    """The plan, from a child process that reads the config (see the module docstring)."""
    try:
        result = subprocess.run(
            plan_argv(config_path, state_dir), capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        raise LlmctlError("reading the config for the supervisor took over 120 s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()][-8:]
        raise LlmctlError("the supervisor cannot read its config", details=lines)
    try:
        return Plan.from_json(result.stdout)
    except (ValueError, KeyError, TypeError) as exc:
        raise LlmctlError(f"the supervisor's plan is unreadable: {exc}") from None


def _signature(paths: list[Path]) -> tuple[tuple[int, int] | None, ...]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def switching(state_dir: Path) -> str | None:
    """Why nothing may be done now (an llmctl command holds the lock, or left an intent), or None."""
    try:
        intent = transaction.pending(state_dir)
    except LlmctlError:
        return "intent.json is unreadable (llmctl recover)"
    if intent is not None:
        return f"{intent.command} under way (phase {intent.phase})"
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot check the lock: {exc.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = path.read_text().strip()
        except OSError:
            holder = ""
        return f"{holder or 'another llmctl'} holds the lock"
    finally:
        os.close(fd)  # also lets go of the shared lock at once
    return None


def journal_lines(unit: str, state: systemd.UnitState | None) -> list[str]:
    """The journal of the unit's current run (its last lines when there is no current run)."""
    if state is None or not state.started_monotonic_us:
        return systemd.journal_tail(unit, 50)
    started = time.time() - (time.monotonic() - state.started_monotonic_us / 1e6)
    return systemd.journal_since(unit, started - 1)


def wait_gpu_released(pids: list[int], timeout: float) -> None:
    from llmctl import gpu  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        usage = gpu.memory_by_pid()
        if usage is None or not any(pid in usage for pid in pids):
            return
        time.sleep(0.25)


def restart_unit(request: RestartRequest, state_dir: Path) -> tuple[RestartOutcome, str]:
    """Stop, wait until gone, start (no wait): under the state lock, never waiting for it.

    A crashed unit (`request.crashed`) is only started, now rather than after RestartSec=, and
    only while systemd still waits to restart it (SubState auto-restart): a process that runs
    is never touched."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(state_lock(state_dir, f"supervisor: restart {request.backend}", wait=False))
    except LlmctlError as exc:
        return RestartOutcome.BUSY, exc.message
    with stack:
        try:
            if transaction.pending(state_dir) is not None:
                return RestartOutcome.BUSY, "a switch is under way"
            state = systemd.show([request.unit]).get(request.unit)
            if request.crashed:
                if state is None or state.sub_state != "auto-restart":
                    return RestartOutcome.GONE, "systemd restarted it already"
                # A restart job ends systemd's wait (auto-restart becomes dead) and starts it.
                systemd.restart([request.unit], block=False)
                return RestartOutcome.DONE, ""
            if state is None or state.active_state != "active" or state.main_pid != request.main_pid:
                return RestartOutcome.GONE, "the unit changed before the restart"
            pids = procs.cgroup_pids(state.control_group) or [state.main_pid]
            how = stop_hung(request.unit, pids)
            wait_gpu_released(pids, GPU_FREE_TIMEOUT)
            systemd.start([request.unit], block=False)
        except LlmctlError as exc:
            return RestartOutcome.FAILED, exc.message
    return RestartOutcome.DONE, how


def stop_hung(unit: str, pids: list[int]) -> str:
    """Stop a unit judged hung; says how ("SIGTERM" or "SIGKILL after N s").

    A stop job first (SIGTERM and SIGCONT to every process: a healthy llama-server exits in
    milliseconds). A process that stopped answering may not finish a graceful stop either, and
    TimeoutStopSec= (60 s) would keep the backend down that long: after HUNG_STOP_GRACE its
    processes are killed, and the stop job ends as they go (so Restart= does not fire)."""
    systemd.stop([unit], block=False)
    if not procs.wait_gone(pids, HUNG_STOP_GRACE):
        how = "SIGTERM"
    else:
        systemd.kill([unit], "SIGKILL")
        how = f"SIGKILL after {HUNG_STOP_GRACE:.0f} s"
        if procs.wait_gone(pids, GONE_TIMEOUT):
            raise LlmctlError(f"{unit}: processes {pids} still alive after SIGKILL")
    # The start that follows must not meet the stop job still running (it would replace it).
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        state = systemd.show([unit]).get(unit)
        if state is None or state.active_state in ("inactive", "failed"):
            break
        time.sleep(0.05)
    return how


def _gpu_reader() -> Any:
    from llmctl import gpu  # noqa: PLC0415

    return getattr(gpu, "read_inventory", None)


class Supervisor:
    def __init__(self, config_path: Path, state_dir: Path, plan: Plan) -> None:
        import sdnotify  # noqa: PLC0415

        self.config_path = config_path
        self.state_dir = state_dir
        self.notifier = sdnotify.SystemdNotifier()
        self.stop = threading.Event()
        self.http = probes.client()
        self.engine = Engine(plan, Store(state_dir), self._emit, journal_lines, on_probe=self._observed)
        self.metrics = Metrics(
            state_dir,
            gpu_read=_gpu_reader(),
            units=lambda: {b.unit: b.name for b in self.engine.plan.backends},
        )
        self.metrics.declare({b.name: b.kind for b in plan.backends})
        self.pool = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(plan.backends) + 2), thread_name_prefix="probe"
        )
        self.futures: dict[Future[Any], ProbeRequest | RestartRequest | str | ExitWait] = {}
        self.exit_wait: ExitWait | None = None
        self.exited: dict[int, float] = {}  # pid -> when it exited, until systemd shows it gone
        self.inputs = [state_dir / APPLIED_CONFIG, state_dir / SERVING_FILE, config_path]
        self.seen_inputs = _signature(self.inputs)
        self.ready = False
        self.first_round: set[Future[Any]] | None = None
        self.status = ""

    # -- callbacks from the engine ------------------------------------------------------------

    def _emit(self, event: events.Event) -> None:
        try:
            events.record(self.state_dir, event)
        except OSError as exc:
            print(f"llmctl supervisor: cannot write {EVENTS_FILE}: {exc}", file=sys.stderr, flush=True)
            events.to_journal(event)
        self.metrics.events.labels(event.backend, event.event).inc()
        if event.event == "restart" and event.probe:
            self.metrics.restarts.labels(event.backend, event.probe).inc()
        elif event.event == "crashed":
            self.metrics.restarts.labels(event.backend, "crash").inc()
        elif event.event == "probe-failed" and event.probe:
            self.metrics.probe_failures.labels(event.backend, event.probe).inc()

    def _observed(self, name: str, probe: str, result: ProbeResult) -> None:
        if result.latency_ms is not None and not result.skipped:
            self.metrics.probe_duration.labels(name, probe).observe(result.latency_ms / 1000)

    # -- work in threads ----------------------------------------------------------------------

    def _probe(self, request: ProbeRequest) -> ProbeResult:
        backend = next(b for b in self.engine.plan.backends if b.name == request.backend)
        if request.probe == "deep":
            return probes.deep(self.http, backend, request.timeout)
        if request.probe == "progress":
            return probes.progress(self.http, backend, request.timeout)
        return probes.liveness(self.http, backend, request.timeout)

    def _submit(self, actions: list[ProbeRequest | RestartRequest]) -> list[Future[Any]]:
        submitted = []
        for action in actions:
            future: Future[Any]
            if isinstance(action, ProbeRequest):
                future = self.pool.submit(self._probe, action)
            else:
                future = self.pool.submit(restart_unit, action, self.state_dir)
            self.futures[future] = action
            submitted.append(future)
        return submitted

    def _collect(self, now: float) -> None:
        for future in [f for f in self.futures if f.done()]:
            action = self.futures.pop(future)
            if self.first_round is not None:
                self.first_round.discard(future)
            if isinstance(action, ExitWait):
                if action is self.exit_wait:
                    self.exit_wait = None
                try:
                    gone = future.result()
                except Exception:  # a failed wait is renewed; the rounds still look
                    gone = []
                self.exited.update(dict.fromkeys(gone, now))
                continue
            if isinstance(action, str):  # a new plan
                try:
                    plan = future.result()
                except LlmctlError as exc:
                    print(
                        f"llmctl supervisor: keeping the old plan: {exc.message}", file=sys.stderr, flush=True
                    )
                    continue
                self.engine.set_plan(plan)
                self.metrics.declare({b.name: b.kind for b in plan.backends})
                continue
            if isinstance(action, ProbeRequest):
                try:
                    result = future.result()
                except Exception as exc:
                    result = ProbeResult(False, f"probe error: {type(exc).__name__}: {exc}")
                if not result.ok and not self._still_same(action):
                    # Stopped or restarted while the probe ran (a `systemctl stop`, say): the
                    # failure is about a process that is going away, not a hang.
                    self.engine.discard(action.backend, action.probe)
                    continue
                self._submit(
                    self.engine.probe_done(now, action.backend, action.probe, action.invocation, result)
                )
            else:
                try:
                    outcome, detail = future.result()
                except Exception as exc:
                    outcome, detail = RestartOutcome.FAILED, f"{type(exc).__name__}: {exc}"
                self.engine.restart_done(now, action, outcome, detail)

    def _still_same(self, request: ProbeRequest) -> bool:
        """Whether the unit still runs, active, the process the probe was sent to."""
        unit = next((b.unit for b in self.engine.plan.backends if b.name == request.backend), None)
        if unit is None:
            return False
        try:
            state = systemd.show([unit]).get(unit)
        except LlmctlError:
            return True  # cannot tell: let the engine judge
        return (
            state is not None
            and state.active_state == "active"
            and (state.main_pid, state.active_since_monotonic_us) == request.invocation
        )

    def _round(self, now: float) -> list[Future[Any]]:
        units = [b.unit for b in self.engine.plan.backends]
        try:
            states = systemd.show(units) if units else {}
        except LlmctlError as exc:
            print(f"llmctl supervisor: systemctl show failed: {exc.message}", file=sys.stderr, flush=True)
            return []
        restarting = any(isinstance(a, RestartRequest) for a in self.futures.values())
        busy = None if restarting else switching(self.state_dir)
        cpu = {
            b.name: probes.cpu_seconds(states[b.unit].main_pid) if b.unit in states else None
            for b in self.engine.plan.backends
        }
        submitted = self._submit(self.engine.round(now, states, busy=busy, cpu=cpu))
        self.metrics.last_round.set(now)
        for name, tracker in self.engine.trackers.items():
            self.metrics.set_phase(name, tracker.phase, tracker.up)
            record = self.engine.store.get(name)
            self.metrics.breaker.labels(name).set(1 if record.breaker else 0)
            self.metrics.streak.labels(name).set(record.streak)
        return submitted

    def _watch_exits(self, now: float) -> None:
        """Keep one exit wait on the main processes systemd shows; forget exits it has seen."""
        # Not while a restart is under way: its stop ends the process on purpose, and the
        # engine looks at the unit again only once the restart is done.
        shown = {
            t.state.main_pid
            for t in self.engine.trackers.values()
            if t.state and t.state.main_pid > 0 and not t.restarting
        }
        self.exited = {
            pid: at for pid, at in self.exited.items() if pid in shown and now - at < EXIT_SETTLE_MAX
        }
        pids = frozenset(shown - set(self.exited))
        current = self.exit_wait
        if current is not None and current.pids == pids:
            return
        if current is not None:
            current.cancel()
        self.exit_wait = None
        if pids:
            self.exit_wait = ExitWait(pids)
            self.futures[self.pool.submit(self.exit_wait.run, EXIT_WAIT)] = self.exit_wait

    def _replan_if_changed(self) -> None:
        signature = _signature(self.inputs)
        if signature == self.seen_inputs or any(isinstance(a, str) for a in self.futures.values()):
            return
        self.seen_inputs = signature
        self.futures[self.pool.submit(load_plan, self.config_path, self.state_dir)] = "plan"

    # -- the loop -----------------------------------------------------------------------------

    def _notify(self) -> None:
        status = self.engine.summary()
        message = "WATCHDOG=1"
        if status != self.status:
            self.status = status
            message += f"\nSTATUS={status}"
        self.notifier.notify(message)

    def run(self) -> int:
        while not self.stop.is_set():
            now = time.time()
            self._collect(now)
            self._replan_if_changed()
            # While a changed config is being read, the old plan may name old ports: wait.
            replanning = any(isinstance(a, str) for a in self.futures.values())
            # A process exited: look now, and again until systemd shows it gone.
            if self.first_round is None or ((self.engine.due(now) or self.exited) and not replanning):
                submitted = self._round(now)
                if self.first_round is None:
                    self.first_round = set(submitted)
            self._watch_exits(now)
            if not self.ready and self.first_round is not None and not self.first_round:
                self.ready = True
                self.notifier.notify(f"READY=1\nSTATUS={self.engine.summary()}")
            self._notify()
            timeout = min(MAX_TICK, max(0.05, self.engine.next_wakeup(now) - time.time()))
            if self.exited:
                timeout = EXIT_SETTLE
            if self.futures:
                wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                self.stop.wait(timeout)
        self.notifier.notify("STOPPING=1")
        if self.exit_wait is not None:
            self.exit_wait.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()
        return 0


def supervise(config_path: Path, state_dir: Path) -> int:
    faulthandler.enable()  # a watchdog SIGABRT leaves every thread's traceback in the journal
    try:
        plan = load_plan(config_path, state_dir)
    except LlmctlError as exc:
        print(f"llmctl supervise: {exc.message}", *exc.details, sep="\n", file=sys.stderr, flush=True)
        return 1
    supervisor = Supervisor(config_path, state_dir, plan)
    if plan.metrics_port is not None:
        try:
            supervisor.metrics.serve(plan.metrics_host, plan.metrics_port)
        except OSError as exc:
            print(
                f"llmctl supervise: cannot serve metrics on {plan.metrics_host}:{plan.metrics_port}: "
                f"{exc.strerror}",
                file=sys.stderr,
                flush=True,
            )
            return 1

    def stop(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return supervisor.run()
