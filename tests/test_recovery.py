"""Rollback and crash recovery refuse unusable snapshots: nothing changes, and they say what to do.

No systemd here: every systemctl call is recorded by a fake, so a test can assert that a
refusal called none. The units written are llmctl's but carry no readiness gate, so a
restore has nothing to start (what a restore starts is covered by tests/integration).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from llmctl import recovery, snapshots, systemd, transaction
from llmctl.errors import ExitCode, LlmctlError
from llmctl.install import GENERATED_MARK
from llmctl.paths import Paths
from tests.test_snapshots import T0, UNIT_LLAMA, install, installed_bytes, read_only, take, write

NEW_UNIT = f"{GENERATED_MARK} 0.1.0\n[Unit]\nDescription=added by the second up\n"


@pytest.fixture
def systemctl(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every systemctl call made, instead of making it."""
    calls: list[tuple[str, ...]] = []

    def fake(*args: str, **_: object) -> object:
        calls.append(args)
        raise AssertionError(f"unexpected systemctl {args}")

    monkeypatch.setattr(systemd, "systemctl", fake)
    monkeypatch.setattr(systemd, "stop", lambda units, **_: calls.append(("stop", *units)) if units else None)
    monkeypatch.setattr(systemd, "daemon_reload", lambda: calls.append(("daemon-reload",)))
    return calls


def two_ups(paths: Paths) -> tuple[Path, str, str]:
    """The issue's history: snapshot A before the first `up`, B before the second (of what the
    first one installed), then the second one's state installed. Returns (config, A, B)."""
    config = write(paths.default_config_file, "version: 1\n# before the first up\n", 0o600)
    first = take(paths, config).id
    config = install(paths)  # what the first up installed
    second = take(paths, config, T0 + timedelta(seconds=1)).id
    write(paths.unit_dir / "llmctl-llama.service", UNIT_LLAMA + "Environment=CHANGED=1\n")
    write(paths.unit_dir / "llmctl-new.service", NEW_UNIT)
    return config, first, second


def refused(paths: Paths, config: Path, ref: str | None = None) -> LlmctlError:
    """Roll back, expecting a refusal that changed nothing (files, snapshots, units)."""
    before, ids = installed_bytes(paths), [s.id for s in snapshots.list_snapshots(paths)]
    with pytest.raises(LlmctlError) as caught:
        recovery.rollback(paths, ref, config_path=config, keep=20)
    assert installed_bytes(paths) == before
    assert [s.id for s in snapshots.list_snapshots(paths)] == ids  # not even a "before rollback" one
    assert caught.value.exit_code == ExitCode.FAILED
    return caught.value


def test_a_plain_rollback_refuses_a_truncated_newest_snapshot_and_names_the_older_one(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config, first, second = two_ups(paths)
    manifest = snapshots.snapshots_dir(paths) / second / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:80])
    error = refused(paths, config)
    assert error.message.startswith(
        f"the newest snapshot, {second}, is corrupt: manifest.json is not valid JSON (truncated?): "
    )
    assert error.message.endswith("it is the one that undoes the last change, so nothing was rolled back")
    # What the older one would do: remove every unit the first up installed, stopping them.
    assert error.details[0].startswith(f"the newest usable older snapshot is {first} (")
    assert error.details[0].endswith(f"before up); `llmctl rollback {first}` would:")
    assert error.details[1:] == [
        "  remove systemd/user/llmctl-llama.service (it stops llmctl-llama.service)",
        "  remove systemd/user/llmctl-new.service (it stops llmctl-new.service)",
        "  remove systemd/user/llmctl.target (it stops llmctl.target)",
        "  remove llmctl/gateway.yaml",
        f"  remove {paths.state_dir / 'state.json'}",
        "  change llmctl/llmctl.yaml",
    ]
    assert error.hint is not None and error.hint.startswith("Nothing was changed.")
    assert f"`llmctl rollback {first}` restores that older state" in error.hint
    assert f"`llmctl snapshot delete {second}` removes the corrupt one; then a plain rollback" in error.hint
    assert systemctl == []
    # `latest` means the same as no ID.
    assert refused(paths, config, "latest").message == error.message


def test_a_plain_rollback_undoes_the_users_last_change_not_the_routers_last_load(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    """With gateway.on_demand the router snapshots before each load; a plain rollback still
    means the user's last change: here B (corrupt), so it refuses naming B, not the load."""
    config, _first, second = two_ups(paths)
    take(paths, config, T0 + timedelta(seconds=2), command=snapshots.LOAD_COMMAND)
    manifest = snapshots.snapshots_dir(paths) / second / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:80])
    assert refused(paths, config).message.startswith(f"the newest snapshot, {second}, is corrupt")
    assert systemctl == []


def test_a_plain_rollback_refuses_a_newest_snapshot_missing_a_file(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config, first, second = two_ups(paths)
    (snapshots.snapshots_dir(paths) / second / "installed/systemd/user/llmctl-llama.service").unlink()
    error = refused(paths, config)
    assert error.message.startswith(
        f"the newest snapshot, {second}, is corrupt: installed/systemd/user/llmctl-llama.service: missing;"
    )
    assert f"`llmctl rollback {first}` would:" in error.details[0]
    assert systemctl == []


def test_without_any_usable_older_snapshot_the_refusal_says_so(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config = install(paths)
    only = take(paths, config).id
    (snapshots.snapshots_dir(paths) / only / "state/state.json").write_text("{}")
    error = refused(paths, config)
    assert error.details == ["no older snapshot is usable either"]
    assert error.hint == f"Nothing was changed. `llmctl snapshot delete {only}` removes the corrupt one."


def test_an_explicit_older_snapshot_is_still_restored_past_a_corrupt_newest_one(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config, first, second = two_ups(paths)
    (snapshots.snapshots_dir(paths) / second / "manifest.json").write_text("{")
    before, result = recovery.rollback(paths, first, config_path=config, keep=20)
    assert result.snapshot == first
    assert not (paths.unit_dir / "llmctl-llama.service").exists()
    assert ("stop", "llmctl-llama.service", "llmctl-new.service", "llmctl.target") in systemctl
    assert snapshots.load(paths, before).manifest is not None  # where we were is kept


def test_a_snapshot_dir_an_ordinary_user_cannot_write_stops_the_rollback_before_anything(
    paths: Paths, systemctl: list[tuple[str, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, chmod stops nothing: the OSError an ordinary user gets is raised where the
    snapshot's directory is created."""
    config, first, _ = two_ups(paths)

    def denied(**kwargs: object) -> str:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(kwargs["dir"]))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    error = refused(paths, config, first)
    root = snapshots.snapshots_dir(paths)
    assert error.message == f"cannot write a snapshot in {root}: permission denied"
    assert error.hint is not None and error.hint.startswith(f"Make {root} writable by you")
    assert systemctl == []


def test_a_read_only_snapshot_dir_stops_the_rollback_before_anything(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    """The same for real: chmod for an ordinary user, a read-only bind mount for root."""
    config, first, _ = two_ups(paths)
    with read_only(snapshots.snapshots_dir(paths)):
        error = refused(paths, config, first)
    assert "cannot write a snapshot in" in error.message
    assert systemctl == []


# --- recovery of an interrupted command -----------------------------------------------------


def test_recovery_refuses_an_intent_whose_snapshot_is_corrupt_and_keeps_the_record(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config, first, second = two_ups(paths)
    transaction.begin(paths.state_dir, "switch", second, ("llmctl-llama.service",))
    manifest = snapshots.snapshots_dir(paths) / second / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:80])
    before = installed_bytes(paths)
    record = paths.state_dir / "intent.json"
    with pytest.raises(LlmctlError) as caught:
        recovery.recover_pending(paths)
    error = caught.value
    assert error.message.startswith(
        f"an earlier `llmctl switch` (pid {os.getpid()}) stopped at phase begin, but the snapshot it took "
        f"cannot be used: snapshot {second} is corrupt: manifest.json is not valid JSON (truncated?)"
    )
    assert error.message.endswith(f"nothing was changed and {record} is kept")
    assert f"`llmctl rollback {first}` would:" in error.details[0]
    # The file changes alone would not say it: that rollback also starts what the switch stopped.
    assert error.details[-1] == "  bring back what the interrupted switch touched: llmctl-llama.service"
    assert error.hint is not None and "`llmctl rollback ID` restores another snapshot instead" in error.hint
    assert record.exists() and installed_bytes(paths) == before and systemctl == []
    # A plain rollback cannot get past it either: it recovers first.
    with pytest.raises(LlmctlError, match="the snapshot it took cannot be used"):
        recovery.rollback(paths, None, config_path=config, keep=20)
    assert record.exists() and installed_bytes(paths) == before

    # The way out the hint names: an explicit rollback restores that one in its place.
    _, result = recovery.rollback(paths, first, config_path=config, keep=20)
    assert result.snapshot == first
    assert not record.exists()
    assert not (paths.unit_dir / "llmctl-llama.service").exists()


def test_recovery_refuses_an_intent_whose_snapshot_is_gone(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    install(paths)
    transaction.begin(paths.state_dir, "up", "20261123T153012Z-up")
    with pytest.raises(LlmctlError, match=r"cannot be used: no snapshot '20261123T153012Z-up'"):
        recovery.recover_pending(paths)
    assert transaction.pending(paths.state_dir) is not None


def test_an_unreadable_intent_is_ended_by_an_explicit_rollback(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    config, first, _ = two_ups(paths)
    record = paths.state_dir / "intent.json"
    record.write_text('{"command": "sw')
    with pytest.raises(LlmctlError, match=r"intent\.json is unreadable") as caught:
        recovery.rollback(paths, None, config_path=config, keep=20)
    assert caught.value.hint is not None and "`llmctl rollback ID` restores one" in caught.value.hint
    _, result = recovery.rollback(paths, first, config_path=config, keep=20)
    assert result.snapshot == first and not record.exists()


def test_recovery_stops_a_touched_unit_whose_file_the_snapshot_lacks(
    paths: Paths, systemctl: list[tuple[str, ...]]
) -> None:
    """A bridge (its file is in no snapshot) is stopped even when its file is already gone."""
    config = install(paths)
    taken = take(paths, config).id
    transaction.begin(
        paths.state_dir, "switch", taken, ("llmctl-llama.service", "llmctl-llama-bridge.service")
    )
    result = recovery.recover_pending(paths)
    assert result is not None and result.snapshot == taken
    assert ("stop", "llmctl-llama-bridge.service") in systemctl
    assert transaction.pending(paths.state_dir) is None


def test_an_intent_records_every_unit_it_touches_and_reads_old_records(paths: Paths) -> None:
    intent = transaction.begin(
        paths.state_dir, "switch", "", ("llmctl-side.service",), wake=("llmctl-big.service",),
        sleep=("llmctl-vl.service",),
    )  # fmt: skip
    moved = transaction.advance(paths.state_dir, intent, "evict")
    assert transaction.pending(paths.state_dir) == moved
    assert (moved.phase, moved.units, moved.wake, moved.sleep) == (
        "evict", ("llmctl-side.service",), ("llmctl-big.service",), ("llmctl-vl.service",),
    )  # fmt: skip
    record = paths.state_dir / "intent.json"
    old = {"command": "up", "snapshot": "x", "pid": 1, "started": "", "phase": "begin"}
    record.write_text(json.dumps(old))
    assert transaction.pending(paths.state_dir) == transaction.Intent("up", "x", 1, "", "begin")
