"""Doctor checks on systemd: the user manager answers, lingering, and llmctl's installed units
(systemd accepts them, and they match what the config renders)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import systemd
from llmctl.doctor.report import Check
from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    from llmctl.install import FileChange


def check_user_manager(reachable: bool, runtime_dir: str | None) -> Check:
    if reachable:
        return Check("user-manager", "ok", "systemctl --user answers")
    why = "no systemd user manager answers systemctl --user"
    if not runtime_dir:
        why += " (XDG_RUNTIME_DIR is not set)"
    return Check("user-manager", "fail", why, fix=systemd.NO_MANAGER_HINT)


def check_linger(linger: bool | None, user: str) -> Check:
    fix = f"loginctl enable-linger {user}"
    if linger is True:
        return Check("linger", "ok", "lingering is on: the stack runs without a login session")
    if linger is False:
        return Check(
            "linger",
            "warn",
            "lingering is off: the stack stops when your last session ends and starts only at login",
            fix=fix,
        )
    return Check("linger", "warn", "cannot tell whether lingering is on (logind does not answer)", fix=fix)


def installed_unit_files(unit_dir: Path) -> list[Path]:
    """llmctl's installed unit files (those carrying its header)."""
    from llmctl.install import GENERATED_MARK  # noqa: PLC0415

    found = []
    if unit_dir.is_dir():
        for path in sorted(unit_dir.glob("llmctl*")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if path.is_file() and path.read_text(encoding="utf-8").startswith(GENERATED_MARK):
                    found.append(path)
    return found


def check_unit_files(files: Sequence[Path], verify: Callable[[Sequence[Path]], str]) -> Check:
    """`systemd-analyze --user verify` prints nothing for good units; any output is a failure."""
    if not files:
        return Check("unit-files", "ok", "no llmctl units installed yet (nothing to verify)")
    try:
        output = verify(files)
    except LlmctlError as err:
        return Check("unit-files", "warn", f"cannot verify the units: {err.message}", fix=err.hint)
    if output:
        lines = tuple(line for line in output.splitlines() if line.strip())
        return Check(
            "unit-files",
            "fail",
            f"systemd-analyze verify complains about the installed units ({len(lines)} line(s))",
            fix="llmctl up rewrites llmctl's units from the config (edit the config, not the units)",
            details=lines,
        )
    return Check("unit-files", "ok", f"systemd-analyze verify: {len(files)} unit file(s) clean")


def check_units_in_step(changes: Sequence[FileChange], need_reload: Sequence[str]) -> Check:
    """Installed files against what the config renders, and units systemd has not re-read."""
    from llmctl.install import ChangeKind  # noqa: PLC0415

    differ = [c for c in changes if c.kind is not ChangeKind.UNCHANGED]
    if differ and all(c.kind is ChangeKind.ADDED for c in changes):
        return Check("units", "warn", "the stack is not installed yet", fix="llmctl up")
    details = [f"{c.kind.value}: {c.path}" for c in differ]
    details += [f"{unit}: changed on disk, systemd still runs the old version" for unit in need_reload]
    if details:
        return Check(
            "units",
            "warn",
            f"{len(differ)} installed file(s) differ from the config"
            + (f", {len(need_reload)} unit(s) need daemon-reload" if need_reload else ""),
            fix="llmctl diff shows how; llmctl up applies the config (and overwrites hand edits)",
            details=tuple(details),
        )
    return Check("units", "ok", "installed units and gateway file match the config")
