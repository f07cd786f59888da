"""Starting the stack at login (`llmctl.target` wanted by default.target) and at boot (linger).

The target Wants= every llmctl unit, so enabling the target is enough: at login the user
manager starts default.target, which pulls in llmctl.target and with it the stack. Without
lingering the user manager (and the stack) only runs while you are logged in.
"""

from __future__ import annotations

import getpass
import subprocess
from dataclasses import dataclass

from llmctl import systemd
from llmctl.errors import LlmctlError
from llmctl.paths import Paths
from llmctl.render.units import TARGET


@dataclass(frozen=True)
class AutostartReport:
    message: str
    linger_hint: str | None = None


def linger_enabled() -> bool | None:
    """True/False from logind; None when it cannot tell (no logind, as in containers)."""
    try:
        result = subprocess.run(
            ["loginctl", "show-user", getpass.getuser(), "--property=Linger", "--value"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    return {"yes": True, "no": False}.get(value) if result.returncode == 0 else None


def enable(paths: Paths) -> AutostartReport:
    systemd.require_manager()
    if not (paths.unit_dir / TARGET).exists():
        raise LlmctlError(f"{TARGET} is not installed", hint="Run llmctl up first.")
    systemd.enable([TARGET])
    linger = linger_enabled()
    user = getpass.getuser()
    hint = None
    if linger is False:
        hint = (
            "lingering is off: the stack starts when you log in and stops when your last session "
            f"ends. To run it from boot without a login: loginctl enable-linger {user}"
        )
    elif linger is None:
        hint = (
            "could not ask logind whether lingering is on; without it the stack runs only while you "
            f"are logged in (loginctl enable-linger {user})"
        )
    return AutostartReport(f"enabled: {TARGET} is wanted by default.target", hint)


def disable(paths: Paths) -> AutostartReport:
    systemd.require_manager()
    systemd.disable([TARGET])
    return AutostartReport(f"disabled: {TARGET} no longer starts at login (running units keep running)")
