"""What the long-running commands (up, restart, rollback, switch) print while they wait."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from llmctl.stack import StackUnit


class ProgressPrinter:
    """One updating line per wait on a terminal; a plain line every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_plain: dict[str, float] = {}
        self.last_len = 0

    def __call__(self, unit: StackUnit, detail: str, waited: float) -> None:
        text = f"waiting for {unit.name}: {detail} ({waited:.1f}s)"
        if self.tty:
            click.echo("\r" + text.ljust(self.last_len), nl=False, err=True)
            self.last_len = len(text)
            return
        if waited - self.last_plain.get(unit.name, -4.0) >= 5.0:
            self.last_plain[unit.name] = waited
            click.echo(text, err=True)

    def done(self) -> None:
        if self.tty and self.last_len:
            click.echo("\r" + " " * self.last_len + "\r", nl=False, err=True)
            self.last_len = 0


def message(text: str) -> None:
    """A line for the user on stderr (stdout is the result)."""
    click.echo(text, err=True)
