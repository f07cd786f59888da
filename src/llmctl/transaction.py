"""Intent records: what a state-changing command was doing, so a crash can be undone.

Before `up` or `switch` change anything they take a snapshot and write `intent.json` naming
it and every unit they will touch; they remove the record when they finish, whether they
succeeded or rolled back. A record found later means the command died mid-way (SIGKILL,
power loss): the next command that takes the lock rolls the stack back to that snapshot
(`llmctl recover`), brings back every unit the record names (a switch's evictions too) and
wakes the vLLMs it names, so the stack ends in the old state or the new one, never a mix. A
switch that changes no file (Ollama's load, waking a sleeping vLLM) records no snapshot, only
the units it touches.

`LLMCTL_TEST_PAUSE_AT=PHASE` makes llmctl stop at that phase (after printing
`llmctl: paused at PHASE`), so tests can kill it exactly there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.fsutil import atomic_write, fsync_dir

INTENT_FILE = "intent.json"
PAUSE_VARIABLE = "LLMCTL_TEST_PAUSE_AT"


@dataclass(frozen=True)
class Intent:
    command: str
    snapshot: str  # the snapshot to roll back to ("": the command changes no file)
    pid: int
    started: str
    phase: str
    # Units the command may stop, start or change (a switch's evictions and bridge too):
    # recovery brings back those the restored files have, and stops the others.
    units: tuple[str, ...] = ()
    wake: tuple[str, ...] = ()  # vLLM units it may put to sleep: recovery wakes them
    sleep: tuple[str, ...] = ()  # vLLM units asleep before that it may wake: put back to sleep


def _path(state_dir: Path) -> Path:
    return state_dir / INTENT_FILE


def pending(state_dir: Path) -> Intent | None:
    path = _path(state_dir)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data["snapshot"], str):
            raise TypeError("snapshot is not a string")
        lists = {k: tuple(str(u) for u in data.get(k, [])) for k in ("units", "wake", "sleep")}
        return Intent(
            **{k: data[k] for k in ("command", "snapshot", "pid", "started", "phase")},
            units=lists["units"],
            wake=lists["wake"],
            sleep=lists["sleep"],
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LlmctlError(
            f"{path} is unreadable ({exc}): an earlier llmctl command may have died mid-way",
            hint="llmctl snapshot list shows the snapshots; `llmctl rollback ID` restores one of "
            "them and ends the interrupted command.",
        ) from None


def begin(
    state_dir: Path,
    command: str,
    snapshot: str,
    units: tuple[str, ...] = (),
    *,
    wake: tuple[str, ...] = (),
    sleep: tuple[str, ...] = (),
) -> Intent:
    """Record the intent before the command touches anything: what to roll back to, and every
    unit it will touch (see Intent)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    intent = Intent(command, snapshot, os.getpid(), started, "begin", units, wake, sleep)
    atomic_write(_path(state_dir), json.dumps(asdict(intent), indent=2) + "\n", mode=0o600)
    return intent


def advance(state_dir: Path, intent: Intent, phase: str) -> Intent:
    """Record that `phase` is reached (then pause there when a test asks to)."""
    moved = replace(intent, phase=phase)
    atomic_write(_path(state_dir), json.dumps(asdict(moved), indent=2) + "\n", mode=0o600)
    pause_point(phase)
    return moved


def finish(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(state_dir).unlink()
        fsync_dir(state_dir)


def pause_point(phase: str) -> None:
    if os.environ.get(PAUSE_VARIABLE) == phase:
        print(f"llmctl: paused at {phase}", file=sys.stderr, flush=True)
        time.sleep(3600)
