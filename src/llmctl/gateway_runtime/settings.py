"""The gateway supervisor's settings: which LiteLLM to run, on which config, and its bounds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmctl.gateway_runtime import (
    CHILD_READY_TIMEOUT,
    CHILD_SCRIPT,
    CHILD_STOP_TIMEOUT,
    DRAIN_TIMEOUT,
    GRACEFUL_TIMEOUT,
    STATE_FILE_NAME,
)


@dataclass(frozen=True)
class Settings:
    python: Path  # the LiteLLM venv's interpreter
    config: Path  # gateway.yaml, snapshotted at every (re)start
    runtime_dir: Path
    child_script: Path = CHILD_SCRIPT
    ready_timeout: float = CHILD_READY_TIMEOUT
    stop_timeout: float = CHILD_STOP_TIMEOUT
    drain_timeout: float = DRAIN_TIMEOUT
    graceful_timeout: float = GRACEFUL_TIMEOUT

    @property
    def state_file(self) -> Path:
        return self.runtime_dir / STATE_FILE_NAME
