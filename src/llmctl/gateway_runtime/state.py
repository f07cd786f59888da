"""The supervisor's state file: which generation serves, with which config, the last reload.

Written atomically (readers see the old file or the new one), as JSON:

    {"version": 1, "supervisor_pid": 812, "listen": "127.0.0.1:4000", "socket_activated": true,
     "status": "serving",          # starting | serving | reloading | stopping | stopped | failed
     "serving":  {"generation": 2, "pid": 950, "config": ".../config-2.yaml",
                  "config_sha256": "...", "source": ".../gateway.yaml", "ready_at": "..."},
     "starting": null,            # the generation being started by a reload, while it is
     "draining": [],              # generations told to stop, until they have exited
     "last_reload": {"seq": 1, "status": "succeeded", "generation": 2, "config_sha256": "...",
                     "started_at": "...", "finished_at": "...", "duration_s": 7.2, "error": null},
     "reloads": {"succeeded": 1, "failed": 0},
     "message": "generation 2 serves config sha256:0123abcd",
     "updated_at": "2026-11-23T15:20:00.123+00:00"}

`last_reload.seq` counts reloads begun; `llmctl gateway reload-wait` waits for one that began
after its SIGHUP to finish.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmctl.fsutil import atomic_write

VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, json.dumps({"version": VERSION, **state}, indent=2) + "\n", mode=0o644)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state, or None when there is no (complete, JSON object) state file."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
