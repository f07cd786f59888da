"""Generations: the LiteLLM child processes of the gateway supervisor.

Each is `child.py` under the LiteLLM venv's python, serving on an inherited copy of the
listening socket, with its own read-only snapshot of gateway.yaml; it writes its ready line on
a pipe once it accepts, and drains when sent SIGTERM. `Generations` starts them, waits for
them (and for signals, at the same time) and stops them.
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.fsutil import atomic_write
from llmctl.gateway_runtime import BACKLOG, LLMCTL_REDIS_VARIABLES
from llmctl.gateway_runtime.settings import Settings
from llmctl.gateway_runtime.signals import Signals
from llmctl.gateway_runtime.sockets import NOT_FOR_CHILDREN
from llmctl.gateway_runtime.state import now_iso

READY_LINE = b"READY"


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The supervisor's environment less what is its own (the socket, the watchdog) and less
    every REDIS_* llmctl did not set (llmctl owns LiteLLM's Redis: gateway.cache)."""
    return {
        k: v
        for k, v in env.items()
        if k not in NOT_FOR_CHILDREN and (not k.startswith("REDIS_") or k in LLMCTL_REDIS_VARIABLES)
    }


def log(message: str) -> None:
    print(f"llmctl-gateway: {message}", file=sys.stderr, flush=True)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


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

    def read_ready_pipe(self) -> None:
        assert self.ready_fd is not None
        try:
            data = os.read(self.ready_fd, 256)
        except BlockingIOError:
            return
        if not data:  # the child closed it: it is exiting (or exited) without being ready
            self.close_pipe()
            return
        self.buffer += data
        if READY_LINE in self.buffer.splitlines():
            self.ready_after = time.monotonic() - self.started
            self.ready_at = now_iso()
            self.close_pipe()


class Generations:
    def __init__(
        self, settings: Settings, listener: socket.socket, signals: Signals, env: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.signals = signals
        self.env = env
        self.last_number = 0

    def spawn(self) -> Generation:
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
        env = child_environment(self.env)
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

    def await_ready(self, gen: Generation) -> str | None:
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
            self.wait(min(remaining, 1.0), gen)

    def stop(self, gens: list[Generation], timeout: float, *, until_term: bool = False) -> bool:
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
            self.wait(min(remaining, 0.5))
        for gen in gens:
            if gen.alive:
                log(f"generation {gen.number} still running {timeout:g} s after SIGTERM: SIGKILL")
                gen.process.kill()
            gen.process.wait()
            gen.close_pipe()
            with contextlib.suppress(FileNotFoundError):
                gen.config.unlink()
        return True

    def wait(self, timeout: float, gen: Generation | None = None) -> None:
        """Sleep until a signal arrives, `gen` writes to its ready pipe, or `timeout` passes."""
        fds = [self.signals.wake_fd]
        if gen is not None and gen.ready_fd is not None:
            fds.append(gen.ready_fd)
        readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        if self.signals.wake_fd in readable:
            self.signals.drain()
        if gen is not None and gen.ready_fd is not None and gen.ready_fd in readable:
            gen.read_ready_pipe()
