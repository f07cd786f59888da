"""`llmctl gpus` and `llmctl plan`: what the GPUs hold, and what serving a model would take.

Both read GPUs through NVML, or from a described inventory (`--gpu-inventory FILE`, the shape of
`llmctl gpus --json`) to plan for another machine. The planning itself is
`llmctl.planner.live.plan_for` (which `switch` and the router call too); the text is
`llmctl.planner.report`.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json
from llmctl.errors import ExitCode

json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON result.")
inventory_option = click.option(
    "--gpu-inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe the GPUs with this JSON file (the shape of `llmctl gpus --json`) instead of NVML.",
)


@click.command("gpus")
@json_option
@inventory_option
def gpus_cmd(as_json: bool, inventory_file: Path | None) -> int:
    """GPUs, their memory and utilisation, and the processes using them mapped to llmctl units."""
    from llmctl import gpu  # noqa: PLC0415
    from llmctl.planner.report import inventory_lines  # noqa: PLC0415

    inventory = gpu.source_for(inventory_file).inventory()
    if as_json:
        emit_json("gpus", gpu.inventory_to_json(inventory))
    else:
        click.echo("\n".join(inventory_lines(inventory)))
    return 0


@click.command("plan")
@click.argument("model")
@click.option("--backend", metavar="NAME", help="Plan for this backend instead of the model's own.")
@json_option
@inventory_option
@click.pass_obj
def plan_cmd(
    app: AppContext, model: str, backend: str | None, as_json: bool, inventory_file: Path | None
) -> int:
    """Where MODEL would run, its memory estimate, and what must stop to make room.

    Exits 1 when it cannot fit even after every allowed eviction.
    """
    from llmctl import gpu  # noqa: PLC0415
    from llmctl.planner.live import plan_for  # noqa: PLC0415
    from llmctl.planner.report import does_not_fit, plan_lines  # noqa: PLC0415

    loaded = app.load()
    result = plan_for(
        loaded.config,
        model,
        backend=backend,
        serving=app.serving(loaded),
        gpu_source=gpu.source_for(inventory_file),
    )
    if as_json:
        if not result.fits:
            return emit_failure("plan", does_not_fit(result), report=result.as_dict())
        emit_json("plan", result.as_dict())
    else:
        click.echo("\n".join(plan_lines(result)))
    return 0 if result.fits else int(ExitCode.FAILED)


def register(group: click.Group) -> None:
    for command in (gpus_cmd, plan_cmd):
        group.add_command(command)
