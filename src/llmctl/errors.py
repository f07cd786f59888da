"""The one error type users see, and the exit codes the CLI maps it to.

Library code raises `LlmctlError`; only `llmctl.cli` catches it, prints the message and the
hint, and exits. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2  # bad arguments or an invalid config
    NOT_RUNNING = 3  # LSB: not running / unhealthy


class LlmctlError(Exception):
    """A failure the user can act on: what went wrong, and what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exit_code: ExitCode = ExitCode.FAILED,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.details = details or []

    def __str__(self) -> str:
        return self.message


class ConfigError(LlmctlError):
    """The config is invalid; `details` lists one problem per line, each with its YAML path."""

    def __init__(self, message: str, *, details: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=ExitCode.USAGE, details=details)
