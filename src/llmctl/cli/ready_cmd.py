"""`llmctl wait-ready`: the readiness gate each unit runs as ExecStartPost=.

The units run it as `python -m llmctl wait-ready`, which `llmctl/__main__.py` hands straight
to `readiness.gate_main` (no click: it is on every start's path). This command is the same
entry for the `llmctl` script, so the options and output are defined once, there.
"""

from __future__ import annotations

import click


@click.command(
    "wait-ready",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
    hidden=True,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def wait_ready_command(args: tuple[str, ...]) -> int:
    """Return once the server at URL serves (used by the units; see --help)."""
    from llmctl.readiness import gate_main  # noqa: PLC0415

    return gate_main(list(args))


def register(group: click.Group) -> None:
    group.add_command(wait_ready_command)
