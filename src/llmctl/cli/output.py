"""Rendering results: plain text for people, a versioned JSON envelope for programs.

JSON envelope (stable; bump RESULT_VERSION on incompatible changes):
    {"llmctl_result_version": 1, "command": "status", "ok": true, "data": {...}}
and on failure:
    {"llmctl_result_version": 1, "command": "up", "ok": false,
     "error": {"message": "...", "hint": "...", "details": [...], "exit_code": 1}}
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llmctl.errors import LlmctlError

RESULT_VERSION = 1


def emit_json(command: str, data: Any, *, ok: bool = True) -> None:
    envelope = {"llmctl_result_version": RESULT_VERSION, "command": command, "ok": ok, "data": data}
    click.echo(json.dumps(envelope, indent=2, default=str))


def emit_error(err: LlmctlError, *, command: str, as_json: bool) -> None:
    if as_json:
        envelope = {
            "llmctl_result_version": RESULT_VERSION,
            "command": command,
            "ok": False,
            "error": {
                "message": err.message,
                "hint": err.hint,
                "details": err.details,
                "exit_code": int(err.exit_code),
            },
        }
        click.echo(json.dumps(envelope, indent=2))
        return
    color = sys.stderr.isatty()
    click.echo(click.style("llmctl: error: ", fg="red", bold=True) + err.message, err=True, color=color)
    for line in err.details:
        click.echo(f"  {line}", err=True)
    if err.hint:
        click.echo(click.style("hint: ", bold=True) + err.hint, err=True, color=color)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow") + message, err=True, color=sys.stderr.isatty())
