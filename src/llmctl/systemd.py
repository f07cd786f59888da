"""Every `systemctl --user` and `journalctl` call llmctl makes goes through this module.

argv lists only, never a shell string. A failing call is logged in a form you can paste
into a shell. "Inactive" answers (exit 3 from is-active, say) are answers, not failures: the
caller says which exit codes are fine.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import ExitCode, LlmctlError


def _debug(message: str, *args: object) -> None:
    """A debug line with each command, for a program that set up logging (llmctl itself does
    not): imported only if it is already, so that the quick paths (the readiness gate,
    `status`, `up NAME`) do not pay ~4.6 ms for it."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message, *args)


SHOW_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "MainPID", "NRestarts", "Result",
    "ExecMainStatus", "ExecMainCode", "ActiveEnterTimestampMonotonic", "ControlGroup",
    "UnitFileState", "StatusText", "InactiveExitTimestampMonotonic",
)  # fmt: skip

NO_MANAGER_HINT = (
    "systemctl --user needs your user manager: log in normally (not via plain su/sudo), or "
    "check that XDG_RUNTIME_DIR is set (usually /run/user/$UID). For services that run without "
    "a login session: loginctl enable-linger $USER."
)


@dataclass(frozen=True)
class UnitState:
    unit: str
    load_state: str
    active_state: str
    sub_state: str
    main_pid: int
    n_restarts: int
    result: str
    control_group: str
    active_since_monotonic_us: int
    unit_file_state: str
    exec_main_code: int = 0  # CLD_*: 1 exited, 2 killed, 3 dumped
    exec_main_status: int = 0  # exit status, or the signal
    status_text: str = ""  # the last STATUS= the service sent (sd_notify)
    started_monotonic_us: int = 0  # when it last left "inactive" (the start began)

    @property
    def exists(self) -> bool:
        return self.load_state not in ("not-found", "")

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "activating", "reloading", "deactivating")


def run(
    argv: Sequence[str],
    *,
    ok_codes: Iterable[int] = (0,),
    capture: bool = True,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    _debug("+ %s", shlex.join(argv))
    try:
        result = subprocess.run(list(argv), capture_output=capture, text=True, check=False, timeout=timeout)
    except FileNotFoundError:
        raise LlmctlError(
            f"{argv[0]} not found",
            hint="llmctl needs systemd (systemctl, journalctl) on PATH.",
        ) from None
    except subprocess.TimeoutExpired:
        raise LlmctlError(f"`{shlex.join(argv)}` did not finish within {timeout} s") from None
    return _checked(argv, result, ok_codes)


def _checked(
    argv: Sequence[str], result: subprocess.CompletedProcess[str], ok_codes: Iterable[int]
) -> subprocess.CompletedProcess[str]:
    if result.returncode not in set(ok_codes):
        stderr = (result.stderr or "").strip()
        if _manager_unreachable(stderr):
            raise LlmctlError(
                "no systemd user manager is reachable", hint=NO_MANAGER_HINT, exit_code=ExitCode.NOT_RUNNING
            )
        raise LlmctlError(
            f"`{shlex.join(argv)}` failed with exit status {result.returncode}"
            + (f": {stderr}" if stderr else ""),
        )
    return result


def _manager_unreachable(stderr: str) -> bool:
    markers = ("Failed to connect to bus", "Failed to connect to user scope bus", "$DBUS_SESSION_BUS_ADDRESS")
    return any(marker in stderr for marker in markers)


def systemctl(
    *args: str, ok_codes: Iterable[int] = (0,), timeout: float | None = 120
) -> subprocess.CompletedProcess[str]:
    return run(["systemctl", "--user", *args], ok_codes=ok_codes, timeout=timeout)


_REACHED: set[str] = set()  # runtime dirs whose manager answered, in this process


def manager_reachable() -> bool:
    return begin_manager_check().reachable()


class ManagerCheck:
    """`systemctl --user is-system-running`, started at once and judged when asked: the quick
    `status` starts it before its imports, so the answer is in by the time it is needed."""

    def __init__(self) -> None:
        self.runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        self.process: subprocess.Popen[str] | None = None
        if not self.runtime_dir or self.runtime_dir in _REACHED:
            return  # no manager to ask; or one answered already (a command asks more than once)
        try:
            self.process = subprocess.Popen(
                ["systemctl", "--user", "is-system-running"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError:
            self.runtime_dir = None

    def reachable(self) -> bool:
        if not self.runtime_dir:
            return False
        if self.process is None:
            return True  # in _REACHED
        try:
            answer, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            return False
        # "running", "degraded", "starting"... all mean a manager answered; "offline" or a bus
        # error means none did.
        reached = answer.strip() not in ("", "offline", "unknown")
        if reached:
            _REACHED.add(self.runtime_dir)
        return reached

    def require(self) -> None:
        if not self.reachable():
            raise _no_manager()


def begin_manager_check() -> ManagerCheck:
    return ManagerCheck()


def require_manager() -> None:
    if not manager_reachable():
        raise _no_manager()


def _no_manager() -> LlmctlError:
    return LlmctlError(
        "no systemd user manager is reachable"
        + ("" if os.environ.get("XDG_RUNTIME_DIR") else " (XDG_RUNTIME_DIR is not set)"),
        hint=NO_MANAGER_HINT,
        exit_code=ExitCode.NOT_RUNNING,  # nothing of the stack can be running without one
    )


def daemon_reload() -> None:
    systemctl("daemon-reload")


def start(units: Sequence[str], *, block: bool = True, timeout: float | None = None) -> None:
    if units:
        systemctl("start", *([] if block else ["--no-block"]), *units, timeout=timeout)


@dataclass
class StartJob:
    """`systemctl --user start|restart UNIT`, running in the background.

    It returns when the unit's start job finishes: active (its readiness gate passed) or
    failed. Waiting on it sees readiness the moment systemd does, where polling
    `systemctl show` would see it up to one interval later, at ~10 ms of CPU per look.
    """

    unit: str
    process: subprocess.Popen[bytes]

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the job to finish; True if it has.

        On a pidfd, woken the moment systemctl exits: Popen.wait(timeout) polls, with sleeps
        that grow to 50 ms, which a start that takes 0.1 s would wait out in part."""
        if self.process.poll() is not None:
            return True
        try:
            pidfd = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):  # no pidfd (Linux < 5.3): poll
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True
        try:
            exited, _, _ = select.select([pidfd], [], [], seconds)
        finally:
            os.close(pidfd)
        if exited:
            self.process.wait()  # exited: reaps at once
        return bool(exited)

    @property
    def finished(self) -> bool:
        return self.process.poll() is not None

    @property
    def succeeded(self) -> bool:
        """Finished, and systemctl exited 0: the job is done and the unit active (its gate
        passed). Anything else (failed, still running) says nothing without a `show`."""
        return self.process.poll() == 0

    def close(self) -> None:
        """Stop waiting (the start job itself carries on in the manager)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


def start_job(unit: str, *, restart: bool = False) -> StartJob:
    argv = ["systemctl", "--user", "restart" if restart else "start", unit]
    _debug("+ %s &", shlex.join(argv))
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise LlmctlError(
            "systemctl not found", hint="llmctl needs systemd (systemctl, journalctl) on PATH."
        ) from None
    return StartJob(unit, process)


def stop(units: Sequence[str], *, block: bool = True, timeout: float | None = 300) -> None:
    if units:
        # 5: a unit that is not loaded (its file is gone) has nothing left to stop.
        systemctl("stop", *([] if block else ["--no-block"]), *units, ok_codes=(0, 5), timeout=timeout)


def kill(units: Sequence[str], signal: str) -> None:
    """Send `signal` to every process of the units (`systemctl kill`'s default: all of them)."""
    if units:
        systemctl("kill", f"--signal={signal}", *units, ok_codes=(0, 1, 5))


def restart(units: Sequence[str], *, block: bool = True, timeout: float | None = None) -> None:
    if units:
        systemctl("restart", *([] if block else ["--no-block"]), *units, timeout=timeout)


def reload(units: Sequence[str], *, timeout: float | None = 600) -> None:
    if units:
        systemctl("reload", *units, timeout=timeout)


def reset_failed(units: Sequence[str]) -> None:
    if units:
        systemctl("reset-failed", *units, ok_codes=(0, 1))


def enable(units: Sequence[str]) -> None:
    systemctl("enable", *units)


def disable(units: Sequence[str]) -> None:
    systemctl("disable", *units)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def show(units: Sequence[str]) -> dict[str, UnitState]:
    """State of many units in one `systemctl show` call."""
    if not units:
        return {}
    return _parse_show(systemctl("show", "--property=" + ",".join(SHOW_PROPERTIES), *units).stdout)


class ShowJob:
    """`show` of these units, started now and parsed when asked for: the quick `status` starts
    it before its imports and before it reads the unit files, so systemctl runs meanwhile."""

    def __init__(self, units: Sequence[str], timeout: float = 120) -> None:
        self.units = tuple(units)
        self.timeout = timeout
        self.argv = ["systemctl", "--user", "show", "--property=" + ",".join(SHOW_PROPERTIES), *self.units]
        self._process: subprocess.Popen[str] | None = None
        if self.units:
            _debug("+ %s &", shlex.join(self.argv))
            with contextlib.suppress(FileNotFoundError):  # result() says so, as show() would
                self._process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )

    def covers(self, units: Sequence[str]) -> bool:
        return set(units) <= set(self.units)

    def result(self) -> dict[str, UnitState]:
        """What show(self.units) returns, or the LlmctlError it raises."""
        if not self.units:
            return {}
        if self._process is None:
            raise LlmctlError(
                "systemctl not found", hint="llmctl needs systemd (systemctl, journalctl) on PATH."
            )
        try:
            stdout, stderr = self._process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise LlmctlError(f"`{shlex.join(self.argv)}` did not finish within {self.timeout} s") from None
        _checked(
            self.argv, subprocess.CompletedProcess(self.argv, self._process.returncode, stdout, stderr), (0,)
        )
        return _parse_show(stdout)

    def close(self) -> None:
        """Not needed after all (no manager, a config to load): end it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


def _parse_show(stdout: str) -> dict[str, UnitState]:
    states: dict[str, UnitState] = {}
    # One block of Key=Value lines per unit, separated by a blank line, in argument order.
    for block in stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        unit = props.get("Id", "")
        if not unit:
            continue
        states[unit] = UnitState(
            unit=unit,
            load_state=props.get("LoadState", ""),
            active_state=props.get("ActiveState", ""),
            sub_state=props.get("SubState", ""),
            main_pid=_int(props.get("MainPID", "0")),
            n_restarts=_int(props.get("NRestarts", "0")),
            result=props.get("Result", ""),
            control_group=props.get("ControlGroup", ""),
            active_since_monotonic_us=_int(props.get("ActiveEnterTimestampMonotonic", "0")),
            unit_file_state=props.get("UnitFileState", ""),
            exec_main_code=_int(props.get("ExecMainCode", "0")),
            exec_main_status=_int(props.get("ExecMainStatus", "0")),
            status_text=props.get("StatusText", ""),
            started_monotonic_us=_int(props.get("InactiveExitTimestampMonotonic", "0")),
        )
    return states


def journal_argv(
    units: Sequence[str],
    *,
    lines: int | None = None,
    follow: bool = False,
    since: str | None = None,
    output: str = "short-iso",
    uid: int | None = None,
) -> list[str]:
    """journalctl for these units, merged by time, matched as a desktop's journal files them.

    A user manager runs in user@UID.service, so journald files a unit's output under
    _SYSTEMD_USER_UNIT=NAME and the manager's own messages about it ("Started", "Main process
    exited") under USER_UNIT=NAME: the matches of `journalctl --user-unit NAME`. A line from a
    process that exited before journald looked up its cgroup has neither, only the unit's
    SyslogIdentifier= (llmctl sets it to the unit name without .service). Each match also
    names our _UID (default: this process's uid), as `--user-unit` does: another user's unit of
    the same name, readable to a member of systemd-journal, is not ours. No `--user`: it reads
    only the user's own journal file, and a volatile journal keeps users' lines in the system
    one (readable to systemd-journal's members).
    """
    argv = ["journalctl", "--no-pager", "-o", output]
    if lines is not None:
        argv += ["-n", str(lines)]
    if follow:
        argv.append("-f")
    if since:
        argv += ["--since", since]
    owner = f"_UID={os.getuid() if uid is None else uid}"
    matches: list[str] = []
    for unit in units:
        for match in (
            f"_SYSTEMD_USER_UNIT={unit}",
            f"USER_UNIT={unit}",
            f"SYSLOG_IDENTIFIER={unit.removesuffix('.service')}",
        ):
            if matches:
                matches.append("+")
            matches += [match, owner]
    return argv + matches


def journal_tail(unit: str, lines: int = 20) -> list[str]:
    try:
        result = run(journal_argv([unit], lines=lines, output="cat"), ok_codes=(0, 1), timeout=30)
    except LlmctlError:
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]


def journal_since(unit: str, since_epoch: float, lines: int = 200) -> list[str]:
    """The unit's journal lines since a time (seconds since the epoch), oldest first."""
    argv = journal_argv([unit], lines=lines, since=f"@{int(since_epoch)}", output="cat")
    try:
        result = run(argv, ok_codes=(0, 1), timeout=30)
    except LlmctlError:
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]


def verify(paths: Sequence[Path], *, timeout: float = 120) -> str:
    """What `systemd-analyze --user verify` says about these unit files: "" when they are clean.

    It exits 0 even on warnings (an unknown key, a missing executable), so any output at all is
    a finding. It needs an XDG_RUNTIME_DIR even without a manager: an empty private one stands
    in when none is set. Raises LlmctlError when systemd-analyze is missing or hangs.
    """
    if not paths:
        return ""
    import tempfile  # noqa: PLC0415 - only here: status and the gate never verify

    argv = ["systemd-analyze", "--user", "verify", "--man=no", *(str(p) for p in paths)]
    _debug("+ %s", shlex.join(argv))
    with tempfile.TemporaryDirectory(prefix="llmctl-verify-") as scratch:
        env = dict(os.environ)
        if not env.get("XDG_RUNTIME_DIR"):
            env["XDG_RUNTIME_DIR"] = scratch
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=timeout, env=env
            )
        except FileNotFoundError:
            raise LlmctlError(
                "systemd-analyze not found", hint="It comes with systemd (package systemd)."
            ) from None
        except subprocess.TimeoutExpired:
            raise LlmctlError(f"`{shlex.join(argv)}` did not finish within {timeout} s") from None
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and not output:
        output = f"systemd-analyze exited with status {result.returncode}"
    return output
