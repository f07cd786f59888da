"""`llmctl doctor`: check the machine, the config and the installed units; exit 1 on any failure."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json, json_option
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.doctor import Check

COLORS = {"ok": "green", "warn": "yellow", "fail": "red"}


def format_checks(checks: Sequence[Check], *, color: bool = False, verbose: bool = False) -> str:
    """One line per check (CHECK STATUS REASON); under a warning or failure its details and fix."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        status = check.status.upper().ljust(4)
        if color:
            status = click.style(status, fg=COLORS[check.status], bold=check.status != "ok")
        lines.append(f"{check.name.ljust(width)}  {status}  {check.reason}")
        indent = " " * (width + 8)
        if check.status != "ok" or verbose:
            lines.extend(f"{indent}{detail}" for detail in check.details)
        if check.status != "ok" and check.fix:
            fix = textwrap.fill(
                check.fix, width=100, initial_indent=f"{indent}fix: ", subsequent_indent=f"{indent}     "
            )
            lines.append(fix)
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}
    lines.append("")
    lines.append(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    return "\n".join(lines)


@click.command()
@json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the details of passing checks too.")
@click.pass_obj
def doctor(app: AppContext, as_json: bool, verbose: bool) -> int:
    """Check the machine, the config and the installed units: each check ok, warn or fail.

    Exit status 1 when any check fails, 0 otherwise (warnings included).
    """
    from llmctl import doctor as doctor_mod  # noqa: PLC0415

    checks = doctor_mod.run(app.paths, app.config_path)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        report = {
            "status": doctor_mod.worst([c.status for c in checks]),
            "checks": [c.as_dict() for c in checks],
        }
        if not failed:
            emit_json("doctor", report)
            return int(ExitCode.OK)
        bad = [c for c in checks if c.status == "fail"]
        failure = LlmctlError(
            f"{len(bad)} check(s) failed: {', '.join(c.name for c in bad)}",
            details=[f"{c.name}: {c.reason}" for c in bad],
            hint="Each failed check in error.report.checks has its fix.",
        )
        return emit_failure("doctor", failure, report=report)
    color = sys.stdout.isatty()
    click.echo(format_checks(checks, color=color, verbose=verbose), color=color)
    return int(ExitCode.FAILED) if failed else int(ExitCode.OK)


def register(group: click.Group) -> None:
    group.add_command(doctor)
