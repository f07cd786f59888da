"""`llmctl runbook [NAME]`: list the runbooks, or print one filled in from the config."""

from __future__ import annotations

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_json, json_option
from llmctl.errors import ConfigError


def _values(app: AppContext, backend: str | None) -> dict[str, str]:
    """Unit name, port, paths of one backend (the first, unless named) from the config."""
    from llmctl.stack import select, stack_units  # noqa: PLC0415

    try:
        loaded = app.load()
    except ConfigError:
        if backend:
            raise
        return {}
    units = stack_units(loaded.config)
    chosen = select(units, (backend,)) if backend else [u for u in units if not u.is_gateway][:1]
    values = {
        "config_path": str(loaded.path),
        "state_dir": str(app.paths.state_dir),
        "unit_dir": str(app.paths.unit_dir),
    }
    gateway = [u for u in units if u.is_gateway]
    if gateway:
        values |= {"gateway_unit": gateway[0].unit, "gateway_port": str(gateway[0].port)}
    if chosen:
        unit = chosen[0]
        values |= {
            "name": unit.name,
            "unit": unit.unit,
            "host": unit.host,
            "port": str(unit.port),
            "kind": unit.kind,
        }
    return values


@click.command()
@click.argument("name", required=False)
@click.option("--backend", help="Fill in this backend's unit and port (default: the first one).")
@json_option
@click.pass_obj
def runbook(app: AppContext, name: str | None, backend: str | None, as_json: bool) -> int:
    """List the runbooks, or print NAME with your unit names, ports and paths."""
    from llmctl import runbooks  # noqa: PLC0415

    if name is None:
        books = runbooks.list_runbooks()
        if as_json:
            emit_json("runbook", {"runbooks": [{"name": b.name, "title": b.title} for b in books]})
            return 0
        width = max(len(b.name) for b in books)
        for book in books:
            click.echo(f"{book.name.ljust(width)}  {book.title}")
        return 0
    text = runbooks.render(name, _values(app, backend))
    if as_json:
        emit_json("runbook", {"name": name, "text": text})
        return 0
    click.echo(text, nl=False)
    return 0


def register(group: click.Group) -> None:
    group.add_command(runbook)
