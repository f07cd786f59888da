"""`llmctl gateway serve`: the gateway service's main process, LiteLLM's blue/green supervisor.

It owns the listening socket (from systemd, or bound itself) and never accepts on it: each
*generation* is a child process (`child.py` under the LiteLLM venv's python) serving on an
inherited copy, with its own read-only snapshot of gateway.yaml. Life of the process:

* start generation 1; READY=1 once it is ready (its ready line on a pipe). If it fails: exit 1.
* SIGHUP: snapshot the file, start N+1 and wait (bounded) for its ready line. If it exits or
  times out, N keeps serving and the reload is recorded as failed. If it is ready, N is sent
  SIGTERM and waited for (it drains its connections), then the reload is recorded as done.
  A SIGHUP that arrives during a reload triggers one more reload after it.
* SIGTERM/SIGINT: stop (drain) the serving child, exit 0.
* the serving child dies on its own: exit 1, so that systemd restarts the service while the
  socket unit keeps queueing connections.

Everything it knows goes to the state file (`llmctl.gateway_runtime.state`) and to STATUS=.
The master key reaches LiteLLM through the environment (the unit's EnvironmentFile=), never
through an argv or a file written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from llmctl.errors import ExitCode, LlmctlError
from llmctl.fsutil import atomic_write
from llmctl.gateway_runtime import (
    BACKLOG,
    CHILD_READY_TIMEOUT,
    CHILD_SCRIPT,
    CHILD_STOP_TIMEOUT,
    DRAIN_TIMEOUT,
    GRACEFUL_TIMEOUT,
    STATE_FILE_NAME,
)
from llmctl.gateway_runtime.state import now_iso, write_state

SD_LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# Meant for the supervisor only: a child must not see them (NotifyAccess=main refuses it anyway).
_NOT_FOR_CHILDREN = (*_LISTEN_VARS, "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")
READY_LINE = b"READY"
ABANDON_TIMEOUT = 10.0  # stopping a generation that never became ready

Notify = Callable[[str], None]


def log(message: str) -> None:
    print(f"llmctl-gateway: {message}", file=sys.stderr, flush=True)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def systemd_notifier() -> Notify:
    """sd_notify through $NOTIFY_SOCKET, or nothing when not run by systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda _message: None
    import sdnotify  # noqa: PLC0415

    notifier = sdnotify.SystemdNotifier()

    def notify(message: str) -> None:
        notifier.notify(message)

    return notify


# --- the listening socket ---------------------------------------------------------------------


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def inherited_socket(env: dict[str, str] | os._Environ[str]) -> socket.socket | None:
    """The socket systemd passed (LISTEN_PID/LISTEN_FDS, fd 3), or None; the variables go."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = env.get("LISTEN_FDS", "")
    for name in _LISTEN_VARS:
        env.pop(name, None)
    if count != "1":
        raise LlmctlError(
            f"systemd passed LISTEN_FDS={count!r}; the gateway takes exactly one socket",
            hint="The socket unit must have one ListenStream= line.",
        )
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise LlmctlError("fd 3 from systemd is not a listening stream socket")
    # Only the children get it, through pass_fds.
    os.set_inheritable(sock.fileno(), False)
    _set_nodelay(sock)
    return sock


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as err:
        raise LlmctlError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    _set_nodelay(sock)
    return sock


def address_of(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return str(name)


# --- signals ----------------------------------------------------------------------------------


class Signals:
    """SIGHUP/SIGTERM/SIGINT become flags; every signal (SIGCHLD too) wakes `wait`'s select."""

    def __init__(self) -> None:
        self.hup = False
        self.term = False
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.term = True

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass


# --- generations ------------------------------------------------------------------------------


class GenerationError(Exception):
    """A generation could not even be started (its config, or its python)."""


@dataclass
class Generation:
    number: int
    process: subprocess.Popen[bytes]
    ready_fd: int | None
    config: Path
    sha256: str
    started: float  # time.monotonic()
    ready_after: float | None = None
    ready_at: str | None = None
    buffer: bytes = b""
    signalled: bool = False  # SIGTERM sent

    @property
    def ready(self) -> bool:
        return self.ready_after is not None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> dict[str, Any]:
        return {
            "generation": self.number,
            "pid": self.process.pid,
            "config": str(self.config),
            "config_sha256": self.sha256,
            "ready_at": self.ready_at,
            "ready_after_s": None if self.ready_after is None else round(self.ready_after, 3),
        }

    def close_pipe(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


@dataclass(frozen=True)
class Settings:
    python: Path  # the LiteLLM venv's interpreter
    config: Path  # gateway.yaml, snapshotted at every (re)start
    runtime_dir: Path
    child_script: Path = CHILD_SCRIPT
    ready_timeout: float = CHILD_READY_TIMEOUT
    stop_timeout: float = CHILD_STOP_TIMEOUT
    drain_timeout: float = DRAIN_TIMEOUT
    graceful_timeout: float = GRACEFUL_TIMEOUT

    @property
    def state_file(self) -> Path:
        return self.runtime_dir / STATE_FILE_NAME


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        listener: socket.socket,
        signals: Signals,
        *,
        socket_activated: bool = False,
        notify: Notify = lambda _message: None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.signals = signals
        self.socket_activated = socket_activated
        self.notify = notify
        self.env = dict(os.environ if env is None else env)
        self.last_number = 0
        self.serving: Generation | None = None
        self.starting: Generation | None = None
        self.draining: list[Generation] = []
        self.reload_seq = 0
        self.last_reload: dict[str, Any] | None = None
        self.counts = {"succeeded": 0, "failed": 0}
        self.status = "starting"
        self.message = ""

    # -- the main loop --

    def run(self) -> int:
        self._publish("starting", "starting generation 1")
        try:
            first = self._spawn()
        except GenerationError as err:
            self._publish("failed", f"cannot start: {err}")
            return 1
        self.starting = first
        problem = self._await_ready(first)
        self.starting = None
        if problem is not None:
            self._stop([first], ABANDON_TIMEOUT)
            if self.signals.term:
                self._publish("stopped", "stopped before generation 1 was ready")
                return 0
            self._publish("failed", f"generation 1 {problem}")
            return 1
        self.serving = first
        self._publish("serving", self._serving_message(), ready=True)
        while True:
            serving = self.serving
            if self.signals.term:
                return self._shutdown()
            if not serving.alive:
                self._publish(
                    "failed",
                    f"generation {serving.number} (pid {serving.process.pid}) exited on its own "
                    f"({describe_exit(serving.process.returncode)}); exiting so that systemd restarts "
                    "the gateway",
                )
                serving.close_pipe()
                return 1
            if self.signals.hup:
                self.signals.hup = False
                self._reload()
                continue
            self._wait(1.0)

    def _shutdown(self) -> int:
        self.notify("STOPPING=1")
        # The serving generation, and one still draining if the stop came during a reload.
        stopping = [g for g in (self.serving, *self.draining) if g is not None]
        numbers = " and ".join(str(g.number) for g in stopping)
        self._publish("stopping", f"stopping: draining generation {numbers}")
        self._stop(stopping, self.settings.stop_timeout)
        self.draining = []
        how = ", ".join(f"generation {g.number} {describe_exit(g.process.returncode)}" for g in stopping)
        self._publish("stopped", f"stopped ({how})")
        return 0

    def _reload(self) -> None:
        assert self.serving is not None
        old = self.serving
        self.reload_seq += 1
        started = time.monotonic()
        self.last_reload = {
            "seq": self.reload_seq,
            "status": "in-progress",
            "generation": self.last_number + 1,
            "config_sha256": None,
            "started_at": now_iso(),
            "finished_at": None,
            "duration_s": None,
            "error": None,
        }
        self._publish("reloading", f"reload {self.reload_seq}: starting generation {self.last_number + 1}")
        try:
            new = self._spawn()
        except GenerationError as err:
            self._reload_done(started, f"{err}; generation {old.number} keeps serving")
            return
        self.last_reload["config_sha256"] = new.sha256
        self.starting = new
        self._publish("reloading", f"reload {self.reload_seq}: generation {new.number} is starting")
        problem = self._await_ready(new)
        self.starting = None
        if problem is not None:
            self._stop([new], ABANDON_TIMEOUT)
            self._reload_done(
                started, f"generation {new.number} {problem}; generation {old.number} keeps serving"
            )
            return
        # From here on only the new generation accepts; the old one finishes what it has.
        self.serving = new
        self.draining = [old]
        self._publish("reloading", f"generation {new.number} serves; generation {old.number} is draining")
        if self._stop([old], self.settings.stop_timeout, until_term=True):
            self.draining = []
            log(f"generation {old.number} exited ({describe_exit(old.process.returncode)})")
        # else: the service is being stopped; _shutdown drains both generations at once.
        self._reload_done(started, None)

    def _reload_done(self, started: float, error: str | None) -> None:
        assert self.last_reload is not None
        ok = error is None
        self.counts["succeeded" if ok else "failed"] += 1
        self.last_reload.update(
            status="succeeded" if ok else "failed",
            finished_at=now_iso(),
            duration_s=round(time.monotonic() - started, 3),
            error=error,
        )
        self._publish("serving", self._serving_message())

    # -- generations --

    def _spawn(self) -> Generation:
        number = self.last_number + 1
        snapshot, digest = self._snapshot(number)
        listen_fd = self.listener.fileno()
        ready_r, ready_w = os.pipe()
        s = self.settings
        argv = [
            str(s.python), "-I", "-u", str(s.child_script),
            "--fd", str(listen_fd),
            "--ready-fd", str(ready_w),
            "--parent-pid", str(os.getpid()),
            "--generation", str(number),
            "--drain-timeout", f"{s.drain_timeout:g}",
            "--graceful-timeout", f"{s.graceful_timeout:g}",
            "--backlog", str(BACKLOG),
        ]  # fmt: skip
        env = {k: v for k, v in self.env.items() if k not in _NOT_FOR_CHILDREN}
        env["CONFIG_FILE_PATH"] = str(snapshot)
        # What the unit sets; here too for a supervisor started by hand.
        env.setdefault("LITELLM_MODE", "PRODUCTION")
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            process = subprocess.Popen(
                argv, env=env, pass_fds=(listen_fd, ready_w), stdin=subprocess.DEVNULL, close_fds=True
            )
        except OSError as err:
            os.close(ready_r)
            with contextlib.suppress(FileNotFoundError):
                snapshot.unlink()
            raise GenerationError(f"cannot run {s.python}: {err.strerror or err}") from None
        finally:
            os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.last_number = number
        log(f"generation {number} (pid {process.pid}) starting with config sha256:{digest[:12]}")
        return Generation(number, process, ready_r, snapshot, digest, time.monotonic())

    def _snapshot(self, number: int) -> tuple[Path, str]:
        """A private read-only copy of the config; refuses a missing or empty file.

        LiteLLM loads CONFIG_FILE_PATH only if it exists and ends in .yaml/.yml; otherwise it
        starts, healthy, with no models at all. Hence the check, and the suffix.
        """
        source = self.settings.config
        try:
            if not stat.S_ISREG(source.stat().st_mode):
                raise GenerationError(f"{source} is not a regular file")
            data = source.read_bytes()
        except FileNotFoundError:
            raise GenerationError(
                f"{source} does not exist (LiteLLM would start without any model)"
            ) from None
        except OSError as err:
            raise GenerationError(f"cannot read {source}: {err.strerror or err}") from None
        if not data.strip():
            raise GenerationError(f"{source} is empty (LiteLLM would start without any model)")
        path = self.settings.runtime_dir / f"config-{number}.yaml"
        atomic_write(path, data, mode=0o400)
        return path, hashlib.sha256(data).hexdigest()

    def _await_ready(self, gen: Generation) -> str | None:
        """None once `gen` is ready, else why not (it exited, timed out, or we are stopping)."""
        deadline = gen.started + self.settings.ready_timeout
        while True:
            if gen.ready:
                log(f"generation {gen.number} ready after {gen.ready_after:.2f} s")
                return None
            if not gen.alive:
                return f"exited with {describe_exit(gen.process.returncode)} before it was ready"
            if self.signals.term:
                return "was abandoned: the gateway is stopping"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"was not ready within {self.settings.ready_timeout:g} s"
            self._wait(min(remaining, 1.0), gen)

    def _stop(self, gens: list[Generation], timeout: float, *, until_term: bool = False) -> bool:
        """SIGTERM each (a child drains), wait up to `timeout`, then SIGKILL; clean up after them.

        With `until_term`, a SIGTERM to us cuts the wait short (False), leaving them running.
        """
        for gen in gens:
            if gen.alive and not gen.signalled:
                with contextlib.suppress(ProcessLookupError):
                    gen.process.send_signal(signal.SIGTERM)
                gen.signalled = True
        deadline = time.monotonic() + timeout
        while any(g.alive for g in gens) and (remaining := deadline - time.monotonic()) > 0:
            if until_term and self.signals.term:
                return False
            self._wait(min(remaining, 0.5))
        for gen in gens:
            if gen.alive:
                log(f"generation {gen.number} still running {timeout:g} s after SIGTERM: SIGKILL")
                gen.process.kill()
            gen.process.wait()
            gen.close_pipe()
            with contextlib.suppress(FileNotFoundError):
                gen.config.unlink()
        return True

    def _wait(self, timeout: float, gen: Generation | None = None) -> None:
        """Sleep until a signal arrives, `gen` writes to its ready pipe, or `timeout` passes."""
        fds = [self.signals.wake_fd]
        if gen is not None and gen.ready_fd is not None:
            fds.append(gen.ready_fd)
        readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        if self.signals.wake_fd in readable:
            self.signals.drain()
        if gen is not None and gen.ready_fd is not None and gen.ready_fd in readable:
            self._read_ready(gen)

    def _read_ready(self, gen: Generation) -> None:
        assert gen.ready_fd is not None
        try:
            data = os.read(gen.ready_fd, 256)
        except BlockingIOError:
            return
        if not data:  # the child closed it: it is exiting (or exited) without being ready
            gen.close_pipe()
            return
        gen.buffer += data
        if READY_LINE in gen.buffer.splitlines():
            gen.ready_after = time.monotonic() - gen.started
            gen.ready_at = now_iso()
            gen.close_pipe()

    # -- reporting --

    def _serving_message(self) -> str:
        assert self.serving is not None
        s = self.serving
        text = f"generation {s.number} (pid {s.process.pid}) serves config sha256:{s.sha256[:12]}"
        if self.last_reload is not None:
            r = self.last_reload
            if r["status"] == "succeeded":
                text += f"; reload {r['seq']} succeeded in {r['duration_s']:.1f} s"
            else:
                text += f"; reload {r['seq']} FAILED: {r['error']}"
        return text

    def _publish(self, status: str, message: str, *, ready: bool = False) -> None:
        self.status, self.message = status, message
        state = {
            "supervisor_pid": os.getpid(),
            "listen": address_of(self.listener),
            "socket_activated": self.socket_activated,
            "status": status,
            "serving": None if self.serving is None else self.serving.describe(),
            "starting": None if self.starting is None else self.starting.describe(),
            "draining": [g.describe() for g in self.draining],
            "last_reload": self.last_reload,
            "reloads": dict(self.counts),
            "source": str(self.settings.config),
            "message": message,
            "updated_at": now_iso(),
        }
        try:
            write_state(self.settings.state_file, state)
        except OSError as err:
            log(f"cannot write {self.settings.state_file}: {err}")
        log(message)
        self.notify(("READY=1\n" if ready else "") + f"STATUS={message}")


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    notify: Notify | None = None,
) -> int:
    """Run the supervisor until SIGTERM (0) or until it cannot serve (1)."""
    # First of all: a SIGHUP before this would kill the process (its default action).
    signals = Signals()
    listener = inherited_socket(os.environ)
    activated = listener is not None
    if listener is None:
        if host is None or port is None:
            raise LlmctlError(
                "not socket-activated (no LISTEN_FDS for this process) and no --host/--port given",
                exit_code=ExitCode.USAGE,
            )
        listener = bind_socket(host, port)
    if not (settings.python.is_file() and os.access(settings.python, os.X_OK)):
        raise LlmctlError(
            f"the LiteLLM python {settings.python} is not an executable file",
            hint="gateway.command must be the `litellm` script of an installed LiteLLM venv; "
            "run `llmctl up` after fixing it.",
        )
    settings.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    supervisor = Supervisor(
        settings,
        listener,
        signals,
        socket_activated=activated,
        notify=systemd_notifier() if notify is None else notify,
    )
    return supervisor.run()
