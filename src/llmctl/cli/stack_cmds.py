"""up, down, restart, status, logs, enable, disable, gateway key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json, json_option, warn
from llmctl.cli.progress import ProgressPrinter, message
from llmctl.errors import ExitCode

if TYPE_CHECKING:
    from llmctl.config.schema import Config

names_argument = click.argument("names", nargs=-1, metavar="[NAME]...")
no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Fail at once if another llmctl holds the lock."
)


@click.command()
@names_argument
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    help="Seconds to wait for each unit (default: its start timeout).",
)
@no_wait_option
@click.option("--no-rollback", is_flag=True, help="On failure keep the failed state (for debugging).")
@json_option
@click.pass_obj
def up(
    app: AppContext,
    names: tuple[str, ...],
    timeout: float | None,
    no_wait: bool,
    no_rollback: bool,
    as_json: bool,
) -> int:
    """Install the rendered units and start the stack; return once every backend serves.

    A change is a transaction: llmctl snapshots first, and if a changed unit does not become
    ready, restores the snapshot so the previous state serves again.
    """
    from llmctl import systemd  # noqa: PLC0415

    # is-system-running answers while the config's schema is imported and the config loaded;
    # a manager that answered is remembered, so lifecycle.up does not ask again.
    manager = systemd.begin_manager_check()
    from llmctl import lifecycle  # noqa: PLC0415

    loaded = app.load()
    manager.reachable()
    for problem in loaded.warnings:
        warn(problem.describe())
    printer = ProgressPrinter()
    try:
        result = lifecycle.up(
            loaded, app.render(loaded), app.paths, names, timeout=timeout, wait_lock=not no_wait,
            progress=None if as_json else printer, on_message=message, serving=app.serving(loaded),
            rollback_on_failure=not no_rollback,
        )  # fmt: skip
    finally:
        printer.done()
    from llmctl.up_report import up_data, up_lines  # noqa: PLC0415

    if as_json:
        emit_json("up", up_data(result))
        return 0
    for line in up_lines(result, app.paths):
        click.echo(line)
    return 0


@click.command()
@names_argument
@no_wait_option
@json_option
@click.pass_obj
def down(app: AppContext, names: tuple[str, ...], no_wait: bool, as_json: bool) -> int:
    """Stop units (all by default, gateway first) and confirm their processes and ports are gone."""
    from llmctl import lifecycle  # noqa: PLC0415
    from llmctl.errors import ConfigError  # noqa: PLC0415

    try:
        loaded = app.load()
    except ConfigError:
        if names:
            raise
        loaded = None  # a broken config must not stop you from stopping what runs
    outcomes = lifecycle.down(loaded, app.paths, names, wait_lock=not no_wait, on_message=message)
    if as_json:
        emit_json("down", {"units": [{"unit": o.unit, "was_running": o.was_running} for o in outcomes]})
        return 0
    for outcome in outcomes:
        click.echo(f"{outcome.unit}: {'stopped' if outcome.was_running else 'not running'}")
    return 0


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--timeout", type=click.FloatRange(min=1))
@json_option
@click.pass_obj
def restart(app: AppContext, names: tuple[str, ...], timeout: float | None, as_json: bool) -> int:
    """Restart units and wait until they serve again."""
    from llmctl import lifecycle  # noqa: PLC0415

    printer = ProgressPrinter()
    try:
        loaded = app.load()
        outcomes = lifecycle.restart(
            loaded,
            app.paths,
            names,
            timeout=timeout,
            progress=None if as_json else printer,
            on_message=message,
            serving=app.serving(loaded),
        )
    finally:
        printer.done()
    if as_json:
        emit_json("restart", {"units": [{"unit": o.unit, "seconds": round(o.seconds, 2)} for o in outcomes]})
        return 0
    for outcome in outcomes:
        click.echo(f"{outcome.unit}: restarted in {outcome.seconds:.1f}s")
    return 0


@click.command()
@json_option
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until interrupted.")
@click.pass_obj
def status(app: AppContext, as_json: bool, watch: bool) -> int:
    """One row per unit: state, PID, uptime, restarts, health, models, memory, CPU.

    Exit status 0 when everything configured is healthy, 3 when something is not.
    """
    from llmctl import status as status_mod  # noqa: PLC0415
    from llmctl import systemd  # noqa: PLC0415

    def load() -> tuple[Config, dict[str, str]]:
        loaded = app.load()
        return loaded.config, app.serving(loaded)

    systemd.require_manager()
    while True:
        result = status_mod.collect_current(app.paths, app.config_path, load)
        if as_json:
            if result.healthy:
                emit_json("status", result.as_dict())
            else:
                emit_failure("status", status_mod.unhealthy(result), report=result.as_dict())
        else:
            if watch:
                click.clear()
            click.echo(status_mod.format_table(result))
        if not watch:
            return 0 if result.healthy else int(ExitCode.NOT_RUNNING)
        time.sleep(2)


@click.command()
@names_argument
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n", "--lines", type=int, default=None, help="Show the last N lines (default: 50 unless --since)."
)
@click.option(
    "--since", help="Only lines since this time (journalctl syntax: '10 min ago', '2026-11-23 10:00')."
)
@click.pass_obj
def logs(app: AppContext, names: tuple[str, ...], follow: bool, lines: int | None, since: str | None) -> int:
    """The journal of the llmctl units (all by default), merged by time."""
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.stack import select, stack_units  # noqa: PLC0415

    units = [u.unit for u in select(stack_units(app.load().config), names)]
    if lines is None and since is None:
        lines = 50
    argv = systemd.journal_argv(units, lines=lines, follow=follow, since=since)
    result = systemd.run(argv, ok_codes=(0, 1, 130), capture=False, timeout=None)
    return 0 if result.returncode in (0, 130) else int(ExitCode.FAILED)


@click.command()
@json_option
@click.pass_obj
def enable(app: AppContext, as_json: bool) -> int:
    """Start the stack at login (and at boot, with lingering)."""
    from llmctl import autostart  # noqa: PLC0415

    report = autostart.enable(app.paths)
    if as_json:
        emit_json("enable", {"enabled": True, "message": report.message, "linger_hint": report.linger_hint})
        return 0
    click.echo(report.message)
    if report.linger_hint:
        warn(report.linger_hint)
    return 0


@click.command()
@json_option
@click.pass_obj
def disable(app: AppContext, as_json: bool) -> int:
    """Stop starting the stack at login. Running units keep running."""
    from llmctl import autostart  # noqa: PLC0415

    report = autostart.disable(app.paths)
    if as_json:
        emit_json("disable", {"enabled": False, "message": report.message})
        return 0
    click.echo(report.message)
    return 0


@click.command()
@click.argument("snapshot", required=False, metavar="[ID]")
@click.option("--timeout", type=click.FloatRange(min=1))
@no_wait_option
@json_option
@click.pass_obj
def rollback(
    app: AppContext, snapshot: str | None, timeout: float | None, no_wait: bool, as_json: bool
) -> int:
    """Go back to a snapshot (default: the state before the last change).

    The current state is snapshotted first, so a rollback can itself be undone.
    """
    from llmctl import recovery, systemd  # noqa: PLC0415
    from llmctl.lock import state_lock  # noqa: PLC0415

    systemd.require_manager()
    config_path = app.config_path
    printer = ProgressPrinter()
    try:
        with state_lock(app.paths.state_dir, "rollback", wait=not no_wait, on_wait=message):
            before, result = recovery.rollback(
                app.paths, snapshot, config_path=config_path if config_path.is_file() else None,
                keep=app.snapshot_keep(), timeout=timeout, progress=None if as_json else printer,
                on_message=message,
            )  # fmt: skip
    finally:
        printer.done()
    if as_json:
        emit_json("rollback", {
            "snapshot": result.snapshot, "before": before, "files": [str(p) for p in result.files],
            "units": [{"unit": o.unit, "action": o.action} for o in result.outcomes],
        })  # fmt: skip
        return 0
    click.echo(f"rolled back to snapshot {result.snapshot} (the state before it is snapshot {before})")
    for path in result.files:
        click.echo(f"  restored {path}")
    for outcome in result.outcomes:
        click.echo(f"{outcome.unit}: {outcome.action}")
    return 0


@click.command()
@json_option
@click.pass_obj
def recover(app: AppContext, as_json: bool) -> int:
    """Finish what an interrupted llmctl left: roll back to the snapshot it took first.

    Every state-changing command does this by itself; this command only does that.
    """
    from llmctl import recovery, systemd  # noqa: PLC0415
    from llmctl.lock import state_lock  # noqa: PLC0415

    systemd.require_manager()
    with state_lock(app.paths.state_dir, "recover", on_wait=message):
        result = recovery.recover_pending(app.paths, on_message=message)
    if as_json:
        emit_json(
            "recover",
            {"recovered": result is not None, "snapshot": None if result is None else result.snapshot},
        )
        return 0
    if result is None:
        click.echo("nothing to recover")
    elif result.snapshot is None:  # an Ollama load or a vLLM wake-up, which change no file
        click.echo("undid the interrupted command: what it stopped or put to sleep serves again")
    else:
        click.echo(f"rolled back to snapshot {result.snapshot}")
    return 0


def register(group: click.Group) -> None:
    for command in (up, down, restart, status, logs, enable, disable, rollback, recover):
        group.add_command(command)
