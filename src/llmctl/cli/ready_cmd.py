"""`llmctl wait-ready`: the readiness gate each unit runs as ExecStartPost=."""

from __future__ import annotations

import click

from llmctl.errors import LlmctlError


@click.command("wait-ready")
@click.option("--kind", required=True, help="Backend kind, or 'gateway'.")
@click.option("--url", required=True, help="Base URL of the server, e.g. http://127.0.0.1:8080.")
@click.option("--model", default=None, help="Model id the server must list.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True)
@click.option("--pid", type=int, default=None, help="Give up at once when this process exits.")
def wait_ready_command(kind: str, url: str, model: str | None, timeout: float, pid: int | None) -> int:
    """Return once the server at URL serves (used by the units; handy by hand too)."""
    from llmctl.readiness import wait_ready  # noqa: PLC0415

    try:
        result = wait_ready(kind, url, model, timeout, pid=pid)
    except LlmctlError:
        raise
    click.echo(f"ready after {result.waited:.2f} s: {result.probe.detail}")
    return 0


def register(group: click.Group) -> None:
    group.add_command(wait_ready_command)
