"""Where a configured command resolves: systemd's ExecStart= does not search PATH.

Apart from the config's checks so that `up NAME` on an applied config (llmctl.quick_up)
resolves commands without building the config's schema."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def resolve_executable(command: str) -> Path | None:
    """Absolute path of `command` (absolute, ~/..., or a bare name on PATH), if it exists."""
    if "/" in command or command.startswith("~"):
        path = Path(command).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(command)
    return Path(found) if found else None
