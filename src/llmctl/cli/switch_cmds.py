"""`llmctl switch MODEL`: change what a backend serves, transactionally."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json, json_option
from llmctl.cli.progress import ProgressPrinter, message
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.config.schema import Config
    from llmctl.paths import Paths
    from llmctl.render.units import RenderOptions


@click.command()
@click.argument("model")
@click.option("--backend", help="The backend that should serve it (default: the model's own).")
@click.option("--timeout", type=click.FloatRange(min=1), help="Seconds the new model may take to load.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another llmctl holds the lock.")
@click.option("--dry-run", is_flag=True, help="Only show the plan (as `llmctl plan`); change nothing.")
@click.option(
    "--gpu-inventory",
    "inventory_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plan with GPUs described in FILE (the JSON of `llmctl gpus --json`) instead of NVML.",
)
@json_option
@click.pass_obj
def switch(
    app: AppContext,
    model: str,
    backend: str | None,
    timeout: float | None,
    no_wait: bool,
    dry_run: bool,
    inventory_file: Path | None,
    as_json: bool,
) -> int:
    """Serve MODEL on its backend instead of what it serves now.

    Checks the model file first, takes the old model out of the gateway's routes, stops it,
    starts the new one, checks it answers, then routes it. With a gateway and room for two
    copies, the new model first serves from a bridge unit beside the old one. On any failure
    the previous model serves again, and the output says why.
    """
    from dataclasses import replace  # noqa: PLC0415

    from llmctl import gpu  # noqa: PLC0415
    from llmctl.planner.live import plan_for  # noqa: PLC0415
    from llmctl.planner.report import does_not_fit, plan_lines  # noqa: PLC0415
    from llmctl.switch import resolve  # noqa: PLC0415
    from llmctl.switch import switch as run_switch  # noqa: PLC0415

    loaded = app.load()
    name = resolve(loaded, model, backend)
    gpu_source = gpu.source_for(inventory_file)
    if dry_run:
        from llmctl.switch.beside import bridge_fits  # noqa: PLC0415

        planned = plan_for(
            loaded.config, model, backend=name, serving=app.serving(loaded), gpu_source=gpu_source
        )
        beside = planned.fits and bridge_fits(loaded, planned, name)
        if as_json:
            report = {"dry_run": True, "beside": beside, "plan": planned.as_dict()}
            if not planned.fits:
                return emit_failure("switch", does_not_fit(planned), report=report)
            emit_json("switch", report)
        else:
            click.echo("\n".join(plan_lines(planned)))
            if planned.fits and not planned.already_serving:
                click.echo(
                    f"switch: starts {model} beside the old model (bridge unit), routes it, then replaces it"
                    if beside
                    else f"switch: stops what {name} serves, then starts {model}"
                )
        return 0 if planned.fits else int(ExitCode.FAILED)
    if loaded.config.gateway.on_demand and _router_running():
        return _switch_through_router(loaded.config, app.paths, name, model, timeout, as_json)
    base = app.render_options(loaded)

    def options(serving: dict[str, str]) -> RenderOptions:
        return replace(base, serving=tuple(sorted(serving.items())))

    printer = ProgressPrinter()

    def on_phase(name: str, seconds: float) -> None:
        if not as_json:
            printer.done()
            click.echo(f"  {name:13} {seconds:6.2f}s")

    try:
        result = run_switch(
            loaded, app.paths, model, render_options=options, backend=backend, timeout=timeout,
            wait_lock=not no_wait, progress=None if as_json else printer, on_phase=on_phase,
            on_message=message,
            gpu_source=gpu_source,
        )  # fmt: skip
    finally:
        printer.done()
    if as_json:
        emit_json("switch", {
            "backend": result.backend, "from": result.old, "to": result.new, "unchanged": result.unchanged,
            "snapshot": result.snapshot, "total_s": round(result.total, 3),
            "phases": {name: round(seconds, 3) for name, seconds in result.phases},
        })  # fmt: skip
    elif result.unchanged:
        click.echo(f"{result.backend} already serves {result.new}")
    else:
        click.echo(f"{result.backend}: {result.old or '(nothing)'} -> {result.new} in {result.total:.2f}s")
    return 0


def _router_running() -> bool:
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.router import ROUTER_UNIT  # noqa: PLC0415

    state = systemd.show([ROUTER_UNIT]).get(ROUTER_UNIT)
    return state is not None and state.active_state == "active"


def _switch_through_router(
    config: Config, paths: Paths, name: str, model: str, timeout: float | None, as_json: bool
) -> int:
    """With gateway.on_demand the router alone changes what a backend serves: it drains the
    model in flight, then loads (the same transaction, rolled back on failure)."""
    from llmctl.router import client  # noqa: PLC0415
    from llmctl.secrets import read_router_key  # noqa: PLC0415

    if config.models[model].backend != name:
        raise LlmctlError(
            f"with gateway.on_demand, {model} is served by its own backend ({config.models[model].backend})",
            hint="Drop --backend, or set the model's backend: in the config.",
            exit_code=ExitCode.USAGE,
        )
    # The drain may take gateway.drain_timeout, then the load its start timeout.
    bound = (timeout or 600) + config.gateway.drain_timeout
    body = client.switch(
        config.gateway.router_listen_port, model, bound, read_router_key(paths.router_key_file)
    )
    if as_json:
        emit_json("switch", {"backend": name, "to": model, "unchanged": body["unchanged"], "via": "router",
                             "total_s": body["seconds"], "evicted": body["evicted"]})  # fmt: skip
    elif body["unchanged"]:
        click.echo(f"{name} already serves {model}")
    else:
        click.echo(f"{name}: {model} loaded in {body['seconds']:.2f}s (through llmctl-router)")
    return 0


def register(group: click.Group) -> None:
    group.add_command(switch)
