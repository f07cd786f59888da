"""Writing to the terminal without click: the CLI's text renderings that the quick paths of
`llmctl.entry` print too (click costs ~50 ms to import; `up NAME` and `status` skip it).

click's own functions for these (echo, style) are what the click CLI used before; the output
is the same: styles only on a terminal, each line flushed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmctl.errors import LlmctlError
    from llmctl.stack import StackUnit

_CODES = {"red": "31", "yellow": "33"}


def style(text: str, *, fg: str | None = None, bold: bool = False) -> str:
    codes = ([_CODES[fg]] if fg else []) + (["1"] if bold else [])
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes else text


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


def error(err: LlmctlError) -> None:
    """An error as the CLI prints it: message, details, hint, on stderr."""
    color = sys.stderr.isatty()
    prefix = style("llmctl: error: ", fg="red", bold=True) if color else "llmctl: error: "
    echo(prefix + err.message, err=True)
    for line in err.details:
        echo(f"  {line}", err=True)
    if err.hint:
        echo((style("hint: ", bold=True) if color else "hint: ") + err.hint, err=True)


def warn(message: str) -> None:
    echo((style("warning: ", fg="yellow") if sys.stderr.isatty() else "warning: ") + message, err=True)


def message(text: str) -> None:
    """A line for the user on stderr (stdout is the result)."""
    echo(text, err=True)


class ProgressPrinter:
    """One updating line per wait on a terminal; a plain line every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_plain: dict[str, float] = {}
        self.last_len = 0

    def __call__(self, unit: StackUnit, detail: str, waited: float) -> None:
        text = f"waiting for {unit.name}: {detail} ({waited:.1f}s)"
        if self.tty:
            echo("\r" + text.ljust(self.last_len), nl=False, err=True)
            self.last_len = len(text)
            return
        if waited - self.last_plain.get(unit.name, -4.0) >= 5.0:
            self.last_plain[unit.name] = waited
            echo(text, err=True)

    def done(self) -> None:
        if self.tty and self.last_len:
            echo("\r" + " " * self.last_len + "\r", nl=False, err=True)
            self.last_len = 0
