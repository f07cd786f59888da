"""Rollback: put a snapshot's files back and bring what differs back to serving.

Used three ways: `llmctl rollback [ID]` by hand; automatically when `up` or `switch` fail
half-way (the snapshot they took first is restored); and at the start of every
state-changing command when an intent record shows an earlier one died mid-way (then every
unit the record names comes back too, and the vLLMs it names are woken).

A plain `llmctl rollback` undoes the last change, so it restores the newest snapshot; when
that one is corrupt it refuses and changes nothing, rather than reach past it to an older
state the user did not ask for: the error names the corrupt snapshot and says what
`llmctl rollback ID` with the newest usable older one would do. Recovery refuses the same way
when the snapshot its intent record names cannot be used, and keeps the record; `llmctl
rollback ID` then restores the snapshot the user picks instead and ends the interrupted command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmctl import snapshots, systemd, transaction
from llmctl.converge import Progress, UnitOutcome, converge
from llmctl.errors import LlmctlError
from llmctl.install import ChangeKind
from llmctl.paths import Paths
from llmctl.render.units import GATEWAY_FILE, REDIS_CONF_FILE, REDIS_UNIT, UNIT_SUBDIR
from llmctl.snapshots.manifest import CONFIG_KEY
from llmctl.stack import stack_from_installed
from llmctl.state import record_applied


@dataclass(frozen=True)
class RestoreResult:
    snapshot: str | None  # None: an interrupted command that changed no file was undone
    files: list[str]
    outcomes: list[UnitOutcome]
    notes: tuple[str, ...] = ()  # vLLMs woken or put back to sleep


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
    if REDIS_CONF_FILE in changed:
        changed.add(f"{UNIT_SUBDIR}/{REDIS_UNIT}")  # Redis reads its config only when it starts
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
    """If an earlier command died mid-way, roll back to the snapshot it took and bring back
    every unit it names. Needs the lock. Refuses, changing nothing and keeping the record, when
    that snapshot cannot be used.

    bring_up=False only puts the files back (for `down`, which stops everything anyway)."""
    intent = transaction.pending(paths.state_dir)
    if intent is None:
        return None
    if intent.snapshot:
        _require_usable(paths, intent, intent.snapshot)
    if on_message:
        undo = f"rolling back to snapshot {intent.snapshot}" if intent.snapshot else "undoing what it did"
        on_message(
            f"an earlier `llmctl {intent.command}` (pid {intent.pid}) stopped at phase {intent.phase}; {undo}"
        )
    # The config stays as the user has it: the change they asked for is not lost, only undone.
    return _undo(
        paths, intent, intent.snapshot or None, bring_up=bring_up, include_config=False, on_message=on_message
    )


def _undo(
    paths: Paths,
    intent: transaction.Intent,
    snapshot_id: str | None,
    *,
    bring_up: bool = True,
    include_config: bool,
    timeout: float | None = None,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Undo an interrupted command: what it woke sleeps again, the snapshot's files come back,
    every unit it touched serves again, what it put to sleep wakes up; then the record goes."""
    from llmctl.switch.room import put_to_sleep, wake_up  # noqa: PLC0415 - avoids an import cycle

    notes = put_to_sleep(intent.sleep, paths)[0] if bring_up else []  # first: it frees memory
    if snapshot_id is not None:
        result = restore(
            paths, snapshot_id, also=intent.units, timeout=timeout, progress=progress,
            bring_up=bring_up, include_config=include_config,
        )  # fmt: skip
    else:
        units = [u for u in stack_from_installed(paths.config_home) if u.unit in intent.units]
        outcomes = converge(units, set(), timeout=timeout, progress=progress) if bring_up else []
        result = RestoreResult(None, [], outcomes)
    # A unit it touched whose file the restored state lacks (a bridge) must not run on.
    systemd.stop([u for u in intent.units if not (paths.unit_dir / u).exists()])
    woken, failed = wake_up(intent.wake, paths) if bring_up else ([], [])
    notes += woken
    transaction.finish(paths.state_dir)
    for note in notes:
        if on_message:
            on_message(note)
    if failed:
        raise LlmctlError(
            f"undid the interrupted `llmctl {intent.command}`, but not every vLLM it put to sleep woke up",
            details=failed,
            hint="`llmctl restart NAME` starts it afresh (awake).",
        )
    return RestoreResult(result.snapshot, result.files, result.outcomes, tuple(notes))


def _require_usable(paths: Paths, intent: transaction.Intent, snapshot_id: str) -> None:
    """Refuse recovery (nothing changed, the record kept) when its snapshot cannot be used."""
    try:
        snapshots.load(paths, snapshot_id)
    except LlmctlError as exc:
        record = paths.state_dir / transaction.INTENT_FILE
        raise LlmctlError(
            f"an earlier `llmctl {intent.command}` (pid {intent.pid}) stopped at phase {intent.phase}, but "
            f"the snapshot it took cannot be used: {exc.message}; nothing was changed and {record} is kept",
            details=[*exc.details, *_alternative(paths, snapshot_id, intent)],
            hint=f"`llmctl rollback ID` restores another snapshot instead and ends the interrupted "
            f"{intent.command} (llmctl snapshot list shows which are usable).",
        ) from None


def newest_usable(paths: Paths, *, before: str | None = None) -> snapshots.Snapshot | None:
    """The newest snapshot whose manifest and files all verify (older than `before` if given)."""
    found = snapshots.list_snapshots(paths, verify=True)
    if before is not None:
        ids = [s.id for s in found]
        found = found[: ids.index(before)] if before in ids else found
    return next((s for s in reversed(found) if not s.corrupt), None)


_VERBS = {ChangeKind.ADDED: "add", ChangeKind.CHANGED: "change", ChangeKind.REMOVED: "remove"}
_UNIT_EFFECT = {ChangeKind.ADDED: "starts", ChangeKind.CHANGED: "restarts", ChangeKind.REMOVED: "stops"}


def what_restoring_does(paths: Paths, snapshot: snapshots.Snapshot) -> list[str]:
    """One line per file `llmctl rollback ID` would put back, with the unit each starts or stops."""
    lines = []
    for change in snapshots.restore_plan(paths, snapshot):
        if change.kind is ChangeKind.UNCHANGED:
            continue
        line = f"{_VERBS[change.kind]} {change.path}"
        if change.path.startswith(f"{UNIT_SUBDIR}/"):
            line += f" (it {_UNIT_EFFECT[change.kind]} {change.path.rsplit('/', 1)[-1]})"
        lines.append(line)
    return lines or ["change no file: they match what is installed now"]


def _alternative(paths: Paths, unusable: str, intent: transaction.Intent | None = None) -> list[str]:
    """What the newest usable snapshot older than `unusable` would restore, for the error (and
    what it brings back of what the interrupted command `intent` touched)."""
    older = newest_usable(paths, before=unusable)
    if older is None:
        return ["no older snapshot is usable either"]
    manifest = older.require()
    touched = (intent.units + intent.wake) if intent else ()
    return [
        f"the newest usable older snapshot is {older.id} ({manifest.created}, {manifest.reason}); "
        f"`llmctl rollback {older.id}` would:",
        *(f"  {line}" for line in what_restoring_does(paths, older)),
        *(
            [f"  bring back what the interrupted {intent.command} touched: {', '.join(touched)}"]
            if intent and touched
            else []
        ),
    ]


def _refuse_corrupt_latest(paths: Paths, latest: snapshots.Snapshot) -> LlmctlError:
    older = newest_usable(paths, before=latest.id)
    then = f"; then a plain rollback restores {older.id}" if older else ""
    return LlmctlError(
        f"the newest snapshot, {latest.id}, is corrupt: {latest.problem}; it is the one that undoes "
        "the last change, so nothing was rolled back",
        details=_alternative(paths, latest.id),
        hint="Nothing was changed. "
        + (f"`llmctl rollback {older.id}` restores that older state (llmctl snapshot diff {older.id} "
           "shows all of it); " if older else "")
        + f"`llmctl snapshot delete {latest.id}` removes the corrupt one{then}.",
    )  # fmt: skip


def _target(paths: Paths, ref: str | None) -> str:
    """The snapshot a rollback restores: `ref`, or the newest one, which must be intact."""
    if ref not in (None, "latest"):
        target = snapshots.resolve_id(paths, ref)
        snapshots.load(paths, target)  # verify before touching anything
        return target
    # The router's snapshots before a load on demand are not changes of the user's: a plain
    # rollback undoes the user's last `up` or `switch` (and every load since).
    found = [
        s
        for s in snapshots.list_snapshots(paths, verify=True)
        if s.manifest is None or s.manifest.command != snapshots.LOAD_COMMAND
    ]
    if not found:
        return snapshots.resolve_id(paths, "latest")  # says there are none yet
    if found[-1].corrupt:
        raise _refuse_corrupt_latest(paths, found[-1])
    return found[-1].id


def _taken_over(paths: Paths, ref: str | None) -> tuple[bool, transaction.Intent | None]:
    """Whether an explicit `rollback ID` takes over an intent record that recovery cannot use
    (unreadable, or naming an unusable snapshot), and that record when it is readable."""
    if ref in (None, "latest"):
        return False, None
    try:
        intent = transaction.pending(paths.state_dir)
    except LlmctlError:
        return True, None
    if intent is None or not intent.snapshot:
        return False, None
    try:
        snapshots.load(paths, intent.snapshot)
    except LlmctlError:
        return True, intent
    return False, None


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
    """Snapshot what is there now, then restore `ref` (default: the newest snapshot, the state
    before the last change; refused when it is corrupt). The caller holds the lock. Returns (the
    snapshot of the current state, result).

    An interrupted command is recovered first; when its own snapshot cannot be used, an
    explicit `ref` is restored in its place (with every unit it touched) and ends it."""
    taken_over, interrupted = _taken_over(paths, ref)
    if not taken_over:
        recover_pending(paths, on_message=on_message)
    target = _target(paths, ref)
    before = snapshots.take(
        paths, config_path, reason=f"before rollback to {target}", command="rollback", keep=keep
    )
    try:
        if taken_over:
            if on_message:
                on_message(f"the interrupted command's snapshot is unusable: restoring {target} in its place")
            record = interrupted or transaction.Intent("rollback", target, 0, "", "unreadable")
            result = _undo(
                paths, record, target, include_config=True, timeout=timeout, progress=progress,
                on_message=on_message,
            )  # fmt: skip
        else:
            result = restore(paths, target, timeout=timeout, progress=progress)
    except LlmctlError as failure:
        raise LlmctlError(
            f"restored the files of snapshot {target}, but it does not serve: {failure.message}",
            details=failure.details,
            hint=f"Both states are kept: llmctl rollback {before.id} goes back to where you were.",
        ) from None
    return before.id, result
