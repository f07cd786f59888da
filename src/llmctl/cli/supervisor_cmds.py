"""supervise (what llmctl-supervisor.service runs), events, reset."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_json, json_option

_DIR = click.Path(file_okay=False, path_type=Path)


# Hidden: llmctl-supervisor.service runs it; a user never needs to.
@click.command(hidden=True)
@click.option(
    "--state-dir",
    type=_DIR,
    default=None,
    help="Where state and events live (default: $XDG_STATE_HOME/llmctl).",
)
@click.option(
    "--print-plan", is_flag=True, help="Print what would be watched, with which settings, and exit."
)
@click.pass_obj
def supervise(app: AppContext, state_dir: Path | None, print_plan: bool) -> int:
    """Watch the backends: probe, restart a hung one, serve metrics (run by llmctl-supervisor.service).

    It reads the config the installed units came from (the applied config; --config until the
    first `llmctl up`) and the models `llmctl switch` chose, and re-reads them when they change.
    """
    state = state_dir or app.paths.state_dir
    if print_plan:
        click.echo(_plan_json(app, state))
        return 0
    from llmctl.supervisor.runtime import supervise as run  # noqa: PLC0415

    return run(app.config_path, state)


def _plan_json(app: AppContext, state_dir: Path) -> str:
    from llmctl.config.load import load_config  # noqa: PLC0415
    from llmctl.state import applied_config_file, serving_now  # noqa: PLC0415
    from llmctl.supervisor.plan import build_plan  # noqa: PLC0415

    applied = applied_config_file(state_dir)
    loaded = load_config(applied if applied.is_file() else app.config_path)
    serving = serving_now(loaded.config, state_dir)
    return build_plan(loaded.config, serving).to_json()


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "--since", metavar="WHEN", help="Only events since then: 10m, 2h, 1d, or a time (2026-11-23T10:00)."
)
@click.option("-n", "--lines", type=click.IntRange(min=1), default=None, help="Only the last N events.")
@json_option
@click.pass_obj
def events(
    app: AppContext, names: tuple[str, ...], since: str | None, lines: int | None, as_json: bool
) -> int:
    """What the supervisor saw and did: probe failures, restarts, breaker trips, resets.

    JSON: {"events": [{"time", "backend", "event", "reason", "probe", "evidence"}]}, oldest first.
    """
    from dataclasses import asdict  # noqa: PLC0415

    from llmctl.errors import ExitCode, LlmctlError  # noqa: PLC0415
    from llmctl.supervisor import events as events_mod  # noqa: PLC0415

    found = events_mod.read(app.paths.state_dir)
    if since:
        try:
            start = events_mod.parse_since(since)
        except ValueError as exc:
            raise LlmctlError(str(exc), exit_code=ExitCode.USAGE) from None
        found = [e for e in found if e.when >= start]
    if names:
        found = [e for e in found if e.backend in names]
    if lines is not None:
        found = found[-lines:]
    if as_json:
        emit_json("events", {"events": [asdict(e) for e in found]})
        return 0
    if not found:
        click.echo("no events" + (" in that time" if since else ""))
        return 0
    for event in found:
        when = event.when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        probe = f" [{event.probe}]" if event.probe else ""
        click.echo(f"{when}  {event.backend:<14} {event.event:<13}{probe} {event.reason}")
    return 0


@click.command()
@click.argument("name")
@json_option
@click.pass_obj
def reset(app: AppContext, name: str, as_json: bool) -> int:
    """Close a backend's circuit breaker and forget its restart history.

    The supervisor acts on the backend again from its next round; systemd's own start limit
    (reset-failed) is cleared too. A stopped or failed unit is not started: llmctl up NAME.
    """
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.errors import ExitCode, LlmctlError  # noqa: PLC0415
    from llmctl.supervisor import events as events_mod  # noqa: PLC0415
    from llmctl.supervisor.store import BackendRecord, Store  # noqa: PLC0415

    state_dir = app.paths.state_dir
    store = Store(state_dir)
    known = set(store.all())
    if name not in known:
        with contextlib.suppress(LlmctlError):
            known |= set(app.load().config.backends)
    if name not in known:
        raise LlmctlError(
            f"no backend named {name!r}",
            hint=f"known: {', '.join(sorted(known))}" if known else None,
            exit_code=ExitCode.USAGE,
        )
    before = store.get(name)

    def clear(record: BackendRecord) -> None:
        record.breaker = None
        record.streak = 0
        record.restarts = []

    store.update(name, clear)
    unit = f"llmctl-{name}.service"
    state = None
    if systemd.manager_reachable():
        systemd.reset_failed([unit])
        state = systemd.show([unit]).get(unit)
    events_mod.record(
        state_dir,
        events_mod.make(
            name, "reset", "llmctl reset: breaker closed, restart history cleared",
            evidence={
                "breaker_was": before.breaker.reason if before.breaker else None,
                "restarts_cleared": len(before.restarts),
            },
        ),
    )  # fmt: skip
    if as_json:
        emit_json("reset", {
            "backend": name, "breaker_was": before.breaker.reason if before.breaker else None,
            "restarts_cleared": len(before.restarts),
            "active_state": None if state is None else state.active_state,
        })  # fmt: skip
        return 0
    was = f" (it was open: {before.breaker.reason})" if before.breaker else " (it was closed)"
    click.echo(f"{name}: breaker closed{was}; {len(before.restarts)} recorded restarts forgotten")
    if state is not None and state.active_state in ("inactive", "failed"):
        click.echo(f"{name} is {state.active_state}: start it with llmctl up {name}")
    return 0


def register(group: click.Group) -> None:
    for command in (supervise, events, reset):
        group.add_command(command)
