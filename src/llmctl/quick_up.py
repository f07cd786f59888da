"""`llmctl up NAME...` of backends whose files are installed: started without the config.

A full `up` builds the config's schema, validates, renders the stack and compares it with the
installed files before it starts anything (~150 ms of imports and work, most of an `up NAME`
of a small model). When the last `up`'s record (llmctl.applied_render) says the config and
every other input of its render are unchanged and the installed files are the ones it wrote,
that work would find nothing to change: this starts the named backends from the record with
the same checks (`converge.preflight`) and the same start and wait (`converge.converge`).

It hands on to the click CLI (returns None), which then does the full `up` and reports, for
anything it cannot answer alone: no valid record, an unknown name, a unit that is not a
backend (the gateway, Redis, the router and the supervisor have checks of their own), an
earlier command to recover from, a failed check before anything started (the CLI repeats it
and renders it), a manager that does not answer. Once a unit is being started, a failure is
reported here, as the CLI would, and never retried by the CLI.
"""

from __future__ import annotations

import os

from llmctl import applied_render, console, systemd, transaction
from llmctl.converge import UnitOutcome, converge, preflight
from llmctl.errors import LlmctlError
from llmctl.kinds import Kind
from llmctl.lock import state_lock
from llmctl.paths import Paths
from llmctl.stack import StackUnit, select
from llmctl.up_report import UpResult, up_data, up_lines

BACKEND_KINDS = frozenset(k.value for k in Kind)


def quick_up(
    config_option: str | None, names: tuple[str, ...], as_json: bool, shown: systemd.ShowJob | None = None
) -> int | None:
    """Exit code of the `up`, or None when the click CLI must run it. `shown`: a `show` of the
    named units started before this module was imported (llmctl.entry)."""
    paths = Paths.from_env()
    found = _recorded(paths, config_option, names)
    if found is None:
        return None
    record, chosen = found
    for warning in record.warnings:
        console.warn(warning)
    printer = None if as_json else console.ProgressPrinter()
    waited: list[str] = []

    def on_wait(text: str) -> None:
        waited.append(text)
        console.message(text)

    try:
        with state_lock(paths.state_dir, "up", on_wait=on_wait):
            # What `shown` saw before the lock is stale if another command held it meanwhile.
            fresh = shown if shown is not None and not waited else None
            outcomes = _start(paths, chosen, printer, fresh)
    except LlmctlError as err:
        _report(paths, err, as_json)
        return int(err.exit_code)
    finally:
        if printer is not None:
            printer.done()
    if outcomes is None:
        return None
    _report(paths, UpResult(outcomes=outcomes), as_json)
    return 0


def _recorded(
    paths: Paths, config_option: str | None, names: tuple[str, ...]
) -> tuple[applied_render.AppliedRender, list[StackUnit]] | None:
    """The last `up`'s record and the named backends in it, if it holds and they all are."""
    try:
        config_path = paths.resolve_config_file(config_option, os.environ)
    except LlmctlError:
        return None
    record = applied_render.current(paths, config_path)
    if record is None:
        return None
    try:
        chosen = select(record.units, names)
    except LlmctlError:
        return None  # an unknown name: the CLI names the config's backends in its error
    if any(u.kind not in BACKEND_KINDS for u in chosen):
        return None
    return record, chosen


def _report(paths: Paths, outcome: UpResult | LlmctlError, as_json: bool) -> None:
    """What the click CLI prints for this result or error (cli/stack_cmds.py, cli/output.py)."""
    if as_json:
        from llmctl import envelope  # noqa: PLC0415

        if isinstance(outcome, LlmctlError):
            console.echo(envelope.dumps(envelope.failure("up", outcome)))
        else:
            console.echo(envelope.dumps(envelope.success("up", up_data(outcome))))
    elif isinstance(outcome, LlmctlError):
        console.error(outcome)
    else:
        for line in up_lines(outcome, paths):
            console.echo(line)


def _start(
    paths: Paths,
    chosen: list[StackUnit],
    printer: console.ProgressPrinter | None,
    shown: systemd.ShowJob | None,
) -> list[UnitOutcome] | None:
    """Under the state lock: None to hand on before anything changed, else what converge did."""
    try:
        if transaction.pending(paths.state_dir) is not None:
            return None  # an earlier command died mid-way: the full `up` recovers first
        # preflight and converge look at these units only (is the port theirs, do they run).
        names = [name for u in chosen for name in (u.unit, *u.companions)]
        states = shown.result() if shown is not None and shown.covers(names) else systemd.show(names)
        preflight(chosen, states)
    except LlmctlError:
        return None
    return converge(chosen, set(), progress=printer, states=states)
