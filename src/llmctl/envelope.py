"""The JSON result envelope, without click: `llmctl.cli.output` prints it for every command, and
the quick `status` entry (llmctl.status_entry), which runs without click, prints it the same way.

    {"llmctl_result_version": 1, "command": "snapshot list", "ok": true, "data": {...}}
    {"llmctl_result_version": 1, "command": "status", "ok": false,
     "error": {"message", "hint", "details", "exit_code", "report"}}
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmctl.errors import LlmctlError

RESULT_VERSION = 1


def dumps(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, indent=2, default=str)


def success(command: str, data: Any) -> dict[str, Any]:
    return {"llmctl_result_version": RESULT_VERSION, "command": command, "ok": True, "data": data}


def error_object(err: LlmctlError, report: Any = None) -> dict[str, Any]:
    return {
        "message": err.message,
        "hint": err.hint,
        "details": list(err.details),
        "exit_code": int(err.exit_code),
        "report": report,
    }


def failure(command: str, err: LlmctlError, report: Any = None) -> dict[str, Any]:
    return {
        "llmctl_result_version": RESULT_VERSION,
        "command": command,
        "ok": False,
        "error": error_object(err, report),
    }
