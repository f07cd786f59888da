"""`llmctl gateway reload-wait`: the unit's ExecReload=, a synchronous reload.

systemd 252 has no Type=notify-reload, and an ExecReload= that only sends SIGHUP returns at
once, before LiteLLM has even read the new file. This helper sends SIGHUP and waits until the
supervisor's state file shows the outcome of a reload that began after the signal, so that
`systemctl --user reload llmctl-gateway.service` returns when the new config serves (0), or
fails (1) when it did not and the old generation still serves.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gateway_runtime.state import read_state


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    message: str
    state: dict[str, Any] | None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rpartition(")")[2].lstrip().startswith("Z")


def _reload_of(state: dict[str, Any] | None) -> dict[str, Any]:
    reload = (state or {}).get("last_reload")
    return reload if isinstance(reload, dict) else {}


def reload_wait(pid: int, state_path: Path, timeout: float, *, poll: float = 0.1) -> ReloadOutcome:
    state = read_state(state_path)
    if state is None:
        raise LlmctlError(
            f"no gateway state in {state_path}",
            hint="Is llmctl-gateway.service running? (systemctl --user status llmctl-gateway.service)",
            exit_code=ExitCode.NOT_RUNNING,
        )
    if state.get("supervisor_pid") != pid:
        raise LlmctlError(
            f"{state_path} was written by process {state.get('supervisor_pid')}, not by {pid}",
            exit_code=ExitCode.NOT_RUNNING,
        )
    before = _reload_of(state).get("seq", 0)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise LlmctlError(
            f"the gateway supervisor (pid {pid}) is not running", exit_code=ExitCode.NOT_RUNNING
        ) from None
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(state_path)
        reload = _reload_of(state)
        seq = reload.get("seq")
        if isinstance(seq, int) and seq > before and reload.get("status") in ("succeeded", "failed"):
            took = reload.get("duration_s")
            if reload["status"] == "succeeded":
                serving = (state or {}).get("serving") or {}
                message = (
                    f"reload {seq} succeeded in {took} s: generation {serving.get('generation')} "
                    f"serves config sha256:{str(serving.get('config_sha256'))[:12]}"
                )
                return ReloadOutcome(True, message, state)
            return ReloadOutcome(False, f"reload {seq} failed after {took} s: {reload.get('error')}", state)
        if not _alive(pid):
            return ReloadOutcome(False, f"the gateway supervisor (pid {pid}) exited during the reload", state)
        if time.monotonic() >= deadline:
            return ReloadOutcome(
                False, f"no outcome within {timeout:g} s (the reload may still finish)", state
            )
        time.sleep(poll)
