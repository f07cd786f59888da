"""supervisor.json: what must survive the supervisor's own restarts (backoff, breaker, history).

    {"version": 1, "backends": {"native": {
        "restarts": [{"time": 1790000000.0, "reason": "liveness", "by": "supervisor"}],
        "streak": 2, "last_restart": 1790000000.0,
        "breaker": {"since": 1790000000.0, "reason": "3 restarts within 1800 s"} | null}}}

`streak` counts restarts since the backend was last healthy for backoff.reset_after seconds
(the exponent of the backoff); `restarts` is the recent history the breaker counts (by the
supervisor and, observed, by systemd after a crash). Two processes write it: the supervisor
and `llmctl reset`. Every change is a read-modify-write under an flock of supervisor.lock and
lands atomically, so neither loses the other's change; the supervisor notices a change made
by someone else from the file's stat and re-reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmctl.fsutil import atomic_write
from llmctl.supervisor import STATE_FILE

STORE_VERSION = 1
HISTORY_KEEP = 50


@dataclass(frozen=True)
class Restart:
    time: float
    reason: str
    by: str = "supervisor"  # or "systemd" (observed: an automatic restart after a crash)


@dataclass(frozen=True)
class BreakerState:
    since: float
    reason: str


@dataclass
class BackendRecord:
    restarts: list[Restart] = field(default_factory=list)
    streak: int = 0
    last_restart: float | None = None
    breaker: BreakerState | None = None

    def restarts_within(self, now: float, window: float) -> list[Restart]:
        return [r for r in self.restarts if r.time > now - window]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendRecord:
        breaker = data.get("breaker")
        return cls(
            restarts=[Restart(**r) for r in data.get("restarts") or []],
            streak=int(data.get("streak") or 0),
            last_restart=data.get("last_restart"),
            breaker=BreakerState(**breaker) if breaker else None,
        )


Records = dict[str, BackendRecord]


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self._records: Records = {}
        self._seen: tuple[int, int, int] | None = None
        self.refresh(force=True)

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> Records:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a broken file must not stop the supervisor: it starts over
        backends = data.get("backends") if isinstance(data, dict) else None
        out: Records = {}
        for name, raw in (backends or {}).items():
            with contextlib.suppress(TypeError, ValueError, KeyError):
                out[str(name)] = BackendRecord.from_dict(raw)
        return out

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if someone else changed it; True when it was re-read."""
        signature = _signature(self.path)
        if not force and signature == self._seen:
            return False
        self._records = self._read()
        self._seen = signature
        return True

    def get(self, name: str) -> BackendRecord:
        return self._records.get(name) or BackendRecord()

    def all(self) -> Records:
        return dict(self._records)

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, name: str, change: Callable[[BackendRecord], None]) -> BackendRecord:
        """Apply `change` to one backend's record, read fresh from the file, and save."""
        with self._locked():
            records = self._read()
            record = records.get(name) or BackendRecord()
            change(record)
            record.restarts = record.restarts[-HISTORY_KEEP:]
            records[name] = record
            body = {
                "version": STORE_VERSION,
                "backends": {k: v.to_dict() for k, v in sorted(records.items())},
            }
            atomic_write(self.path, json.dumps(body, indent=2) + "\n", mode=0o600)
            self._records = records
            self._seen = _signature(self.path)
        return record
