"""Supervisor events: one JSON object per line in $XDG_STATE_HOME/llmctl/events.jsonl, and the
same event in the journal with structured fields.

    {"time": "2026-11-23T15:55:37.120+00:00", "backend": "native", "event": "restart",
     "reason": "liveness failed 3 times in a row: timed out", "probe": "liveness",
     "evidence": {...}}

Events: probe-failed (a failure that counts), restart, restart-failed, deferred (backoff),
recovered (serving again after a restart), crashed (systemd restarted it after its process
died), unfixable (not restarted: a restart cannot fix what the journal shows), failed (systemd
gave up on the unit), breaker-open, reset.

The file is bounded: once it grows past MAX_BYTES it is rewritten atomically with its newest
half. Writers (the supervisor, `llmctl reset`) serialise on an flock of events.lock.
In the journal: SYSLOG_IDENTIFIER=llmctl-supervisor, LLMCTL_BACKEND=, LLMCTL_EVENT=,
LLMCTL_REASON=, LLMCTL_PROBE=, LLMCTL_EVIDENCE= (JSON):
`journalctl LLMCTL_BACKEND=native` lists one backend's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmctl import journal
from llmctl.fsutil import atomic_write
from llmctl.supervisor import EVENTS_FILE

MAX_BYTES = 1024 * 1024
JOURNAL_IDENTIFIER = "llmctl-supervisor"

PRIORITIES = {
    "probe-failed": journal.NOTICE,
    "deferred": journal.NOTICE,
    "restart": journal.WARNING,
    "restart-failed": journal.ERR,
    "crashed": journal.WARNING,
    "unfixable": journal.ERR,
    "failed": journal.ERR,
    "breaker-open": journal.ERR,
    "recovered": journal.INFO,
    "reset": journal.INFO,
}


@dataclass(frozen=True)
class Event:
    time: str  # ISO 8601, UTC
    backend: str
    event: str
    reason: str
    probe: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.time)

    def message(self) -> str:
        probe = f" [{self.probe} probe]" if self.probe else ""
        return f"{self.backend}: {self.event}{probe}: {self.reason}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            time=str(data["time"]),
            backend=str(data["backend"]),
            event=str(data["event"]),
            reason=str(data.get("reason", "")),
            probe=data.get("probe"),
            evidence=dict(data.get("evidence") or {}),
        )


def now_iso(epoch: float | None = None) -> str:
    moment = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds")


def make(
    backend: str,
    event: str,
    reason: str,
    *,
    probe: str | None = None,
    evidence: dict[str, Any] | None = None,
    at: float | None = None,
) -> Event:
    return Event(now_iso(at), backend, event, reason, probe, evidence or {})


def events_file(state_dir: Path) -> Path:
    return state_dir / EVENTS_FILE


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "events.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append(state_dir: Path, event: Event, *, max_bytes: int = MAX_BYTES) -> None:
    """Add one line (and trim the file when it has grown past max_bytes)."""
    line = (json.dumps(asdict(event), separators=(",", ":"), default=str) + "\n").encode()
    path = events_file(state_dir)
    with _locked(state_dir):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > max_bytes:
            data = path.read_bytes()
            keep = data[-(max_bytes // 2) :]
            # Start at a line boundary: the first (cut) line is dropped.
            if len(keep) < len(data):
                keep = keep[keep.find(b"\n") + 1 :]
            atomic_write(path, keep, mode=0o600)


def to_journal(event: Event, *, socket_path: str | None = None) -> bool:
    return journal.send(
        f"llmctl supervisor: {event.message()}",
        priority=PRIORITIES.get(event.event, journal.INFO),
        identifier=JOURNAL_IDENTIFIER,
        fields={
            "LLMCTL_BACKEND": event.backend,
            "LLMCTL_EVENT": event.event,
            "LLMCTL_REASON": event.reason,
            "LLMCTL_PROBE": event.probe,
            "LLMCTL_EVIDENCE": json.dumps(event.evidence, sort_keys=True, default=str)
            if event.evidence
            else None,
        },
        socket_path=socket_path,
    )


def record(state_dir: Path, event: Event) -> None:
    """The file, then the journal (best effort)."""
    append(state_dir, event)
    to_journal(event)


def read(state_dir: Path) -> list[Event]:
    """Every event in the file, oldest first; unreadable lines are skipped."""
    return list(reversed(list(_newest_first(state_dir))))


def _newest_first(state_dir: Path) -> Iterator[Event]:
    """The file's events from the newest, each line parsed only when it is reached."""
    try:
        text = events_file(state_dir).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in reversed(text.splitlines()):
        try:
            yield Event.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue


def last_per_backend(state_dir: Path, backends: set[str] | None = None) -> dict[str, Event]:
    """The newest event of each backend (of those named, when given). With names, only the
    lines after the oldest of their newest events are parsed (status asks at every run)."""
    found: dict[str, Event] = {}
    for event in _newest_first(state_dir):
        if event.backend not in found and (backends is None or event.backend in backends):
            found[event.backend] = event
            if backends is not None and len(found) == len(backends):
                break
    return found


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*(ago)?\s*$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `30s`, `1d` (ago), or an ISO 8601 time (local time when no zone is given)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use e.g. 10m, 2h, 1d or 2026-11-23T10:00)") from None
    return moment if moment.tzinfo else moment.astimezone()
