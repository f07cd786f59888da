"""`llmctl snapshot ...`: create, list, show, diff, delete, pin, unpin.

An ID argument is an id, a unique prefix of one, `latest` or `previous`. Commands that
change the store take the state lock, like every other command that changes state.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json, json_option, warn
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.snapshots import Snapshot

id_argument = click.argument("ref", metavar="ID")


@click.group("snapshot")
def snapshot_group() -> None:
    """Versioned snapshots of the config, the installed units, the gateway file and which
    model each backend serves; kept under $XDG_STATE_HOME/llmctl/snapshots."""


@snapshot_group.command("create")
@click.option("-m", "--message", default="manual snapshot", show_default=True, help="Why it was taken.")
@json_option
@click.pass_obj
def create(app: AppContext, message: str, as_json: bool) -> int:
    """Snapshot what llmctl manages now."""
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.lock import state_lock  # noqa: PLC0415

    config_path = app.config_path
    if not config_path.is_file():
        if app.config_option or os.environ.get("LLMCTL_CONFIG"):
            raise LlmctlError(f"no config file at {config_path}", exit_code=ExitCode.USAGE)
        warn(f"no config at {config_path}; the snapshot holds the installed files and state only")
    keep = app.snapshot_keep()
    with state_lock(app.paths.state_dir, "snapshot create"):
        snapshot = snapshots.take(
            app.paths,
            config_path if config_path.is_file() else None,
            reason=message,
            command="snapshot create",
            keep=keep,
        )
    if as_json:
        emit_json("snapshot create", _summary(snapshot))
    else:
        click.echo(f"created snapshot {snapshot.id} ({len(snapshot.require().files)} files)")
    return 0


@snapshot_group.command("list")
@json_option
@click.pass_obj
def list_cmd(app: AppContext, as_json: bool) -> int:
    """Every snapshot, oldest first; corrupt ones (manifest or any file) say what is wrong."""
    from llmctl import snapshots  # noqa: PLC0415

    found = snapshots.list_snapshots(app.paths, verify=True)
    if as_json:
        emit_json(
            "snapshot list",
            {"dir": str(snapshots.snapshots_dir(app.paths)), "snapshots": [_summary(s) for s in found]},
        )
        return 0
    if not found:
        click.echo(f"no snapshots in {snapshots.snapshots_dir(app.paths)}")
        return 0
    width = max(len("ID"), *(len(s.id) for s in found))
    click.echo(f"{'ID':{width}}  {'CREATED':20}  {'PINNED':6}  REASON")
    for snapshot in found:
        if snapshot.manifest is None or snapshot.problem:
            click.echo(f"{snapshot.id:{width}}  CORRUPT: {snapshot.problem}")
            continue
        manifest = snapshot.manifest
        pinned = "yes" if manifest.pinned else ""
        click.echo(f"{snapshot.id:{width}}  {manifest.created:20}  {pinned:6}  {manifest.reason}")
    return 0


@snapshot_group.command("show")
@id_argument
@json_option
@click.pass_obj
def show(app: AppContext, ref: str, as_json: bool) -> int:
    """The manifest of one snapshot (every file verified against its sha256)."""
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.snapshots.diff import active_models  # noqa: PLC0415
    from llmctl.snapshots.manifest import STATE_KEY  # noqa: PLC0415

    snapshot = snapshots.load(app.paths, snapshots.resolve_id(app.paths, ref))
    manifest = snapshot.require()
    models = active_models(snapshot.read(STATE_KEY) if snapshot.has(STATE_KEY) else None)
    if as_json:
        data = _summary(snapshot) | {
            "path": str(snapshot.path),
            "config_path": manifest.config_path,
            "config_schema_version": manifest.config_schema_version,
            "config_sha256": manifest.config_sha256,
            "schema_version": manifest.schema_version,
            "files": {key: entry.to_json() for key, entry in sorted(manifest.files.items())},
            "active_models": dict(line.split(": ", 1) for line in models.splitlines() if ": " in line),
        }
        emit_json("snapshot show", data)
        return 0
    config = "(none)"
    if manifest.config_path is not None:
        config = (
            f"{manifest.config_path} (version {manifest.config_schema_version}, "
            f"sha256 {(manifest.config_sha256 or '')[:12]})"
        )
    rows = [
        ("id", manifest.id),
        ("created", manifest.created),
        ("reason", manifest.reason),
        ("command", manifest.command),
        ("pinned", "yes" if manifest.pinned else "no"),
        ("llmctl", manifest.llmctl_version),
        ("config", config),
        ("path", str(snapshot.path)),
    ]
    for name, value in rows:
        click.echo(f"{name + ':':9} {value}")
    click.echo("files:")
    width = max(len(k) for k in manifest.files) if manifest.files else 0
    for key, entry in sorted(manifest.files.items()):
        click.echo(f"  {key:{width}}  {entry.size:>7} B  {entry.mode:04o}  sha256 {entry.sha256[:12]}")
    click.echo("active models:" + ("" if models else " (none recorded)"))
    for line in models.splitlines():
        click.echo(f"  {line}")
    return 0


@snapshot_group.command("diff")
@id_argument
@click.argument("other", metavar="[ID2]", default="current")
@click.option("--exit-code", is_flag=True, help="Exit 1 when there are differences.")
@json_option
@click.pass_obj
def diff_cmd(app: AppContext, ref: str, other: str, exit_code: bool, as_json: bool) -> int:
    """Unified diff of config, units, gateway file and active models from ID to ID2.

    ID2 defaults to `current`: what is installed now (and the config in use).
    """
    from llmctl import snapshots  # noqa: PLC0415

    a = snapshots.load(app.paths, snapshots.resolve_id(app.paths, ref))
    if other == snapshots.CURRENT:
        text = snapshots.diff(app.paths, a, snapshots.CURRENT, config_path=app.config_path)
    else:
        b = snapshots.load(app.paths, snapshots.resolve_id(app.paths, other))
        text = snapshots.diff(app.paths, a, b)
    if as_json:
        data = {"from": a.id, "to": other, "differs": bool(text), "diff": text}
        if exit_code and text:
            differs = LlmctlError(f"snapshot {a.id} and {other} differ", hint="error.report.diff shows how.")
            return emit_failure("snapshot diff", differs, report=data)
        emit_json("snapshot diff", data)
        return 0
    click.echo(text, nl=False)
    if not text:
        click.echo(f"no differences between {a.id} and {other}", err=True)
    return int(ExitCode.FAILED) if (exit_code and text) else 0


@snapshot_group.command("delete")
@id_argument
@click.option("--force", is_flag=True, help="Delete it even if it is pinned.")
@json_option
@click.pass_obj
def delete(app: AppContext, ref: str, force: bool, as_json: bool) -> int:
    """Delete a snapshot (a corrupt one too)."""
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.lock import state_lock  # noqa: PLC0415

    with state_lock(app.paths.state_dir, "snapshot delete"):
        snapshot_id = snapshots.resolve_id(app.paths, ref)
        snapshots.delete(app.paths, snapshot_id, force=force)
    if as_json:
        emit_json("snapshot delete", {"id": snapshot_id, "deleted": True})
        return 0
    click.echo(f"deleted snapshot {snapshot_id}")
    return 0


@snapshot_group.command("pin")
@id_argument
@json_option
@click.pass_obj
def pin(app: AppContext, ref: str, as_json: bool) -> int:
    """Keep a snapshot whatever the retention count says."""
    return _pin(app, ref, pinned=True, as_json=as_json)


@snapshot_group.command("unpin")
@id_argument
@json_option
@click.pass_obj
def unpin(app: AppContext, ref: str, as_json: bool) -> int:
    """Let retention delete a snapshot again (the next snapshot taken prunes)."""
    return _pin(app, ref, pinned=False, as_json=as_json)


def _pin(app: AppContext, ref: str, *, pinned: bool, as_json: bool) -> int:
    from llmctl import snapshots  # noqa: PLC0415
    from llmctl.lock import state_lock  # noqa: PLC0415

    verb = "pin" if pinned else "unpin"
    with state_lock(app.paths.state_dir, f"snapshot {verb}"):
        snapshot_id = snapshots.resolve_id(app.paths, ref)
        (snapshots.pin if pinned else snapshots.unpin)(app.paths, snapshot_id)
    if as_json:
        emit_json(f"snapshot {verb}", {"id": snapshot_id, "pinned": pinned})
        return 0
    click.echo(f"{verb}ned snapshot {snapshot_id}")
    return 0


def _summary(snapshot: Snapshot) -> dict[str, Any]:
    manifest = snapshot.manifest
    if manifest is None or snapshot.problem:
        return {"id": snapshot.id, "corrupt": True, "problem": snapshot.problem}
    return {
        "id": snapshot.id,
        "corrupt": False,
        "created": manifest.created,
        "reason": manifest.reason,
        "command": manifest.command,
        "pinned": manifest.pinned,
        "llmctl_version": manifest.llmctl_version,
        "files": len(manifest.files),
    }


def register(group: click.Group) -> None:
    group.add_command(snapshot_group)
