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

This module is that life (`Supervisor`); `generation` starts, waits for and stops the
children, `sockets` and `signals` are what systemd and the kernel hand the process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gateway_runtime.generation import (
    READY_LINE,
    Generation,
    GenerationError,
    Generations,
    describe_exit,
    log,
)
from llmctl.gateway_runtime.settings import Settings
from llmctl.gateway_runtime.signals import Signals
from llmctl.gateway_runtime.sockets import (
    SD_LISTEN_FDS_START,
    Notify,
    address_of,
    bind_socket,
    inherited_socket,
    systemd_notifier,
)
from llmctl.gateway_runtime.state import now_iso, write_state

__all__ = [
    "ABANDON_TIMEOUT",
    "READY_LINE",
    "SD_LISTEN_FDS_START",
    "Generation",
    "GenerationError",
    "Notify",
    "Settings",
    "Signals",
    "Supervisor",
    "address_of",
    "bind_socket",
    "describe_exit",
    "inherited_socket",
    "log",
    "serve",
    "systemd_notifier",
]

ABANDON_TIMEOUT = 10.0  # stopping a generation that never became ready


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
        self.generations = Generations(settings, listener, signals, dict(os.environ if env is None else env))
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
            first = self.generations.spawn()
        except GenerationError as err:
            self._publish("failed", f"cannot start: {err}")
            return 1
        self.starting = first
        problem = self.generations.await_ready(first)
        self.starting = None
        if problem is not None:
            self.generations.stop([first], ABANDON_TIMEOUT)
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
            self.generations.wait(1.0)

    def _shutdown(self) -> int:
        self.notify("STOPPING=1")
        # The serving generation, and one still draining if the stop came during a reload.
        stopping = [g for g in (self.serving, *self.draining) if g is not None]
        numbers = " and ".join(str(g.number) for g in stopping)
        self._publish("stopping", f"stopping: draining generation {numbers}")
        self.generations.stop(stopping, self.settings.stop_timeout)
        self.draining = []
        how = ", ".join(f"generation {g.number} {describe_exit(g.process.returncode)}" for g in stopping)
        self._publish("stopped", f"stopped ({how})")
        return 0

    def _reload(self) -> None:
        assert self.serving is not None
        old = self.serving
        self.reload_seq += 1
        started = time.monotonic()
        next_number = self.generations.last_number + 1
        self.last_reload = {
            "seq": self.reload_seq,
            "status": "in-progress",
            "generation": next_number,
            "config_sha256": None,
            "started_at": now_iso(),
            "finished_at": None,
            "duration_s": None,
            "error": None,
        }
        self._publish("reloading", f"reload {self.reload_seq}: starting generation {next_number}")
        try:
            new = self.generations.spawn()
        except GenerationError as err:
            self._reload_done(started, f"{err}; generation {old.number} keeps serving")
            return
        self.last_reload["config_sha256"] = new.sha256
        self.starting = new
        self._publish("reloading", f"reload {self.reload_seq}: generation {new.number} is starting")
        problem = self.generations.await_ready(new)
        self.starting = None
        if problem is not None:
            self.generations.stop([new], ABANDON_TIMEOUT)
            self._reload_done(
                started, f"generation {new.number} {problem}; generation {old.number} keeps serving"
            )
            return
        # From here on only the new generation accepts; the old one finishes what it has.
        self.serving = new
        self.draining = [old]
        self._publish("reloading", f"generation {new.number} serves; generation {old.number} is draining")
        if self.generations.stop([old], self.settings.stop_timeout, until_term=True):
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
