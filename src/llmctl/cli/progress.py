"""What the long-running commands (up, restart, rollback, switch) print while they wait
(llmctl.console, which the quick paths share)."""

from __future__ import annotations

from llmctl.console import ProgressPrinter, message

__all__ = ["ProgressPrinter", "message"]
