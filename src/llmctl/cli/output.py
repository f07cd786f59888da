"""Rendering results: plain text for people, a versioned JSON envelope for programs.

JSON envelope (built by llmctl.envelope, stable: bump its RESULT_VERSION on incompatible
changes; result.schema.json next to this file is its JSON Schema, and
tests/cli/test_json_envelope.py runs every command against it):
    {"llmctl_result_version": 1, "command": "snapshot list", "ok": true, "data": {...}}
and on failure, always `error` and never `data`:
    {"llmctl_result_version": 1, "command": "status", "ok": false,
     "error": {"message": "...", "hint": "..." | null, "details": ["..."], "exit_code": 3,
               "report": {...} | null}}
`command` is the full command path (`snapshot list`, `gateway key`); `report` is what the
command found when that explains the failure (status's units, doctor's checks, plan's plan),
in the shape `data` has on success.
"""

from __future__ import annotations

from typing import Any

import click

from llmctl import console
from llmctl.envelope import dumps, failure, success
from llmctl.errors import LlmctlError

SCHEMA_FILE = "result.schema.json"

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON result (the llmctl envelope)."
)


def emit_json(command: str, data: Any) -> None:
    """A success: `data` is the command's result."""
    click.echo(dumps(success(command, data)))


def emit_failure(command: str, err: LlmctlError, report: Any = None) -> int:
    """A failure that is the command's finding (unhealthy, does not fit), not an exception:
    the envelope carries `error` with the report that explains it. Returns the exit code."""
    click.echo(dumps(failure(command, err, report)))
    return int(err.exit_code)


def emit_error(err: LlmctlError, *, command: str, as_json: bool) -> None:
    if as_json:
        emit_failure(command, err)
        return
    console.error(err)


def warn(message: str) -> None:
    console.warn(message)
