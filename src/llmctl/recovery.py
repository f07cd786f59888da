"""Rollback: put a snapshot's files back and bring what differs back to serving.

Used three ways: `llmctl rollback [ID]` by hand; automatically when `up` or `switch` fail
half-way (the snapshot they took first is restored); and at the start of every
state-changing command when an intent record shows an earlier one died mid-way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmctl import snapshots, systemd, transaction
from llmctl.errors import LlmctlError
from llmctl.install import ChangeKind
from llmctl.lifecycle import Progress, UnitOutcome, converge
from llmctl.paths import Paths
from llmctl.render.units import GATEWAY_FILE, UNIT_SUBDIR
from llmctl.snapshots.manifest import CONFIG_KEY
from llmctl.stack import stack_from_installed
from llmctl.state import record_applied


@dataclass(frozen=True)
class RestoreResult:
    snapshot: str
    files: list[str]
    outcomes: list[UnitOutcome]


def restore(
    paths: Paths,
    snapshot_id: str,
    *,
    also: tuple[str, ...] = (),
    timeout: float | None = None,
    progress: Progress | None = None,
    bring_up: bool = True,
    include_config: bool = True,
) -> RestoreResult:
    """Restore the snapshot's files, then start or restart the units whose files changed (and
    the units named in `also`) and wait until they serve. The caller holds the lock.

    What must serve comes from the restored unit files themselves, so this works whatever the
    config says (after a failed `up`, the user's edited config is deliberately left alone:
    include_config=False)."""
    snapshot = snapshots.load(paths, snapshot_id)
    plan = snapshots.restore_plan(paths, snapshot, include_config=include_config)
    changed = {c.path for c in plan if c.kind is not ChangeKind.UNCHANGED}
    gone = [
        c.path.rsplit("/", 1)[-1]
        for c in plan
        if c.kind is ChangeKind.REMOVED and c.path.startswith(f"{UNIT_SUBDIR}/")
    ]
    systemd.stop(gone)
    snapshots.restore_files(paths, snapshot, include_config=include_config)
    if snapshot.has(CONFIG_KEY):
        # The config the restored units came from (whatever the user's file says now): what
        # the supervisor reads, recorded before anything starts.
        record_applied(paths.state_dir, snapshot.read(CONFIG_KEY).decode("utf-8"))
    systemd.daemon_reload()
    outcomes = [UnitOutcome(unit, "removed") for unit in gone]
    if bring_up:
        units = [
            u
            for u in stack_from_installed(paths.config_home)
            if u.name in also
            or u.unit in also
            or any(f"{UNIT_SUBDIR}/{n}" in changed for n in (u.unit, *u.companions))
            or (u.is_gateway and GATEWAY_FILE in changed)
        ]
        outcomes += converge(units, changed, timeout=timeout, progress=progress)
    return RestoreResult(snapshot.id, sorted(changed), outcomes)


def roll_back_after(
    paths: Paths,
    snapshot_id: str,
    failure: BaseException,
    *,
    also: tuple[str, ...] = (),
    on_message: Callable[[str], None] | None = None,
    note: str = "your config still has the change: fix it and run llmctl up again",
) -> LlmctlError:
    """Restore the snapshot after a failed change; return the error that tells what happened."""
    what = failure.message if isinstance(failure, LlmctlError) else "interrupted"
    details = list(failure.details) if isinstance(failure, LlmctlError) else []
    if on_message:
        on_message(f"{what}: rolling back to snapshot {snapshot_id}...")
    try:
        restore(paths, snapshot_id, also=also, include_config=False)
    except LlmctlError as second:
        transaction.finish(paths.state_dir)
        return LlmctlError(
            f"{what}; the rollback to snapshot {snapshot_id} failed too: {second.message}",
            details=[*details, *second.details],
            hint=f"Both states are kept: llmctl snapshot list; llmctl snapshot diff {snapshot_id}; "
            f"llmctl rollback ID. (llmctl runbook switch-rolled-back)",
        )
    transaction.finish(paths.state_dir)
    return LlmctlError(
        f"{what}; rolled back to snapshot {snapshot_id}: the previous state serves again"
        + (f" ({note})" if note else ""),
        details=details,
        hint=(failure.hint if isinstance(failure, LlmctlError) and failure.hint else None)
        or "llmctl snapshot diff to see what the failed change was",
    )


def recover_pending(
    paths: Paths, *, on_message: Callable[[str], None] | None = None, bring_up: bool = True
) -> RestoreResult | None:
    """If an earlier command died mid-way, roll back to the snapshot it took. Needs the lock.

    bring_up=False only puts the files back (for `down`, which stops everything anyway)."""
    intent = transaction.pending(paths.state_dir)
    if intent is None:
        return None
    if on_message:
        on_message(
            f"an earlier `llmctl {intent.command}` (pid {intent.pid}) stopped at phase {intent.phase}; "
            f"rolling back to snapshot {intent.snapshot}"
        )
    # The config stays as the user has it: the change they asked for is not lost, only undone.
    result = restore(paths, intent.snapshot, also=intent.units, bring_up=bring_up, include_config=False)
    transaction.finish(paths.state_dir)
    return result


def rollback(
    paths: Paths,
    ref: str | None,
    *,
    config_path: Path | None,
    keep: int,
    timeout: float | None = None,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
) -> tuple[str, RestoreResult]:
    """Snapshot what is there now, then restore `ref` (default: the state before the last
    change). The caller holds the lock. Returns (the snapshot of the current state, result)."""
    recover_pending(paths, on_message=on_message)
    target = snapshots.resolve_id(paths, ref or "latest")
    snapshots.load(paths, target)  # verify before touching anything
    before = snapshots.take(
        paths, config_path, reason=f"before rollback to {target}", command="rollback", keep=keep
    )
    try:
        result = restore(paths, target, timeout=timeout, progress=progress)
    except LlmctlError as failure:
        raise LlmctlError(
            f"restored the files of snapshot {target}, but it does not serve: {failure.message}",
            details=failure.details,
            hint=f"Both states are kept: llmctl rollback {before.id} goes back to where you were.",
        ) from None
    return before.id, result
