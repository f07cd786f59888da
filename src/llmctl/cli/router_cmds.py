"""`llmctl router serve`: the on-demand router's process (run by llmctl-router.service)."""

from __future__ import annotations

from pathlib import Path

import click

from llmctl.cli.context import AppContext


@click.group(hidden=True)
def router() -> None:
    """llmctl's request router (gateway.on_demand); internal."""


@router.command("serve")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--gpu-inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plan with GPUs described in FILE instead of NVML (tests).",
)
@click.pass_obj
def serve(app: AppContext, state_dir: Path | None, inventory_file: Path | None) -> int:
    """Route every local model, loading each on demand (run by llmctl-router.service)."""
    from llmctl.router.main import serve as run  # noqa: PLC0415

    return run(app.config_path, state_dir, inventory_file)


def register(group: click.Group) -> None:
    group.add_command(router)
