"""Writing the config `llmctl init` made: it must load, and an existing, different config is
replaced only with --force, after a snapshot of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.paths import Paths


@dataclass(frozen=True)
class WriteResult:
    path: Path
    action: str  # "written" | "replaced" | "unchanged"
    snapshot: str | None = None


def check_valid(text: str, source: str) -> None:
    """What init writes must load (warnings about missing files are fine)."""
    from llmctl.config.load import parse_config  # noqa: PLC0415

    parse_config(text, source)


def write_action(path: Path, text: str, *, force: bool) -> str:
    """ "write" (nothing there), "unchanged" (the same text is there), "replace" (with force);
    raises LlmctlError (exit 2) for an existing, different config without force."""
    if not (path.exists() or path.is_symlink()):
        return "write"
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current == text:
        return "unchanged"
    if not force:
        raise LlmctlError(
            f"{path} already exists; not replacing it",
            hint="llmctl init --force replaces it (it snapshots the current one first: llmctl snapshot list)",
            exit_code=ExitCode.USAGE,
        )
    return "replace"


def write_config(path: Path, text: str, *, force: bool, paths: Paths) -> WriteResult:
    """Write the config atomically. An existing, different config is replaced only with force,
    after a snapshot of it (which never prunes older snapshots)."""
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.fsutil import atomic_write  # noqa: PLC0415

    check_valid(text, str(path))
    action = write_action(path, text, force=force)
    if action == "unchanged":
        return WriteResult(path, "unchanged")
    if action == "write":
        atomic_write(path, text)
        return WriteResult(path, "written")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    keep = max(snapshots.DEFAULT_KEEP, len(snapshots.list_snapshots(paths)) + 1)
    snapshot = snapshots.take(paths, path, reason="before init --force", command="init", keep=keep)
    atomic_write(path, text, mode=mode)
    return WriteResult(path, "replaced", snapshot.id)
