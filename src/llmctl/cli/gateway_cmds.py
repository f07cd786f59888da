"""`llmctl gateway ...`: the LiteLLM proxy in front of the backends."""

from __future__ import annotations

from pathlib import Path

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_json, json_option
from llmctl.gateway_runtime import (
    CHILD_READY_TIMEOUT,
    CHILD_SCRIPT,
    CHILD_STOP_TIMEOUT,
    DRAIN_TIMEOUT,
    GRACEFUL_TIMEOUT,
    RELOAD_WAIT_TIMEOUT,
    STATE_FILE_NAME,
)


@click.group("gateway")
def gateway_group() -> None:
    """The gateway (LiteLLM proxy)."""


@gateway_group.command("key")
@json_option
@click.pass_obj
def gateway_key(app: AppContext, as_json: bool) -> int:
    """Print the gateway's master key (clients send it as the bearer token)."""
    from llmctl.secrets import read_gateway_key  # noqa: PLC0415

    key = read_gateway_key(app.paths.gateway_env_file)
    if as_json:
        emit_json("gateway key", {"key": key, "file": str(app.paths.gateway_env_file)})
        return 0
    click.echo(key)
    return 0


_FILE = click.Path(dir_okay=False, path_type=Path)
_SECONDS = click.FloatRange(min=0.1)


# Hidden, like reload-wait: the gateway unit's ExecStart= and ExecReload=, not for users.
@gateway_group.command("serve", hidden=True)
@click.option("--litellm-python", required=True, type=_FILE, help="The python of LiteLLM's venv.")
@click.option("--config", "config_file", required=True, type=_FILE, help="gateway.yaml (LiteLLM's config).")
@click.option(
    "--runtime-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"For config snapshots and {STATE_FILE_NAME} (the unit passes $RUNTIME_DIRECTORY).",
)
@click.option("--host", default=None, help="Listen here when not socket-activated.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port, with --host.")
@click.option("--ready-timeout", type=_SECONDS, default=CHILD_READY_TIMEOUT, show_default=True)
@click.option("--stop-timeout", type=_SECONDS, default=CHILD_STOP_TIMEOUT, show_default=True)
@click.option("--drain-timeout", type=_SECONDS, default=DRAIN_TIMEOUT, show_default=True)
@click.option("--graceful-timeout", type=_SECONDS, default=GRACEFUL_TIMEOUT, show_default=True)
@click.option("--child-script", type=_FILE, default=CHILD_SCRIPT, hidden=True)
def gateway_serve(
    litellm_python: Path,
    config_file: Path,
    runtime_dir: Path,
    host: str | None,
    port: int | None,
    ready_timeout: float,
    stop_timeout: float,
    drain_timeout: float,
    graceful_timeout: float,
    child_script: Path,
) -> int:
    """Run LiteLLM under a supervisor that reloads its config on SIGHUP without dropping requests.

    This is the ExecStart= of llmctl-gateway.service, which gets its socket from
    llmctl-gateway.socket; `systemctl --user reload llmctl-gateway.service` applies a new
    gateway.yaml. By hand: give --host and --port.
    """
    from llmctl.gateway_runtime.supervisor import Settings, serve  # noqa: PLC0415

    settings = Settings(
        python=litellm_python,
        config=config_file,
        runtime_dir=runtime_dir,
        child_script=child_script,
        ready_timeout=ready_timeout,
        stop_timeout=stop_timeout,
        drain_timeout=drain_timeout,
        graceful_timeout=graceful_timeout,
    )
    return serve(settings, host=host, port=port)


@gateway_group.command("reload-wait", hidden=True)
@click.option("--pid", required=True, type=int, help="The supervisor's pid ($MAINPID).")
@click.option("--state", "state_file", type=_FILE, default=None, help="The supervisor's state file.")
@click.option(
    "--runtime-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Or its runtime directory (the state file is {STATE_FILE_NAME} in it).",
)
@click.option("--timeout", type=_SECONDS, default=RELOAD_WAIT_TIMEOUT, show_default=True)
def gateway_reload_wait(pid: int, state_file: Path | None, runtime_dir: Path | None, timeout: float) -> int:
    """Send SIGHUP to the gateway supervisor and wait for the reload's outcome (exit 0 or 1).

    This is the ExecReload= of llmctl-gateway.service: `systemctl --user reload` returns when
    the new config serves, and fails when it does not (the old config keeps serving).
    """
    from llmctl.gateway_runtime.reload import reload_wait  # noqa: PLC0415

    if (state_file is None) == (runtime_dir is None):
        raise click.UsageError("give exactly one of --state and --runtime-dir")
    if state_file is None:
        assert runtime_dir is not None
        state_file = runtime_dir / STATE_FILE_NAME
    outcome = reload_wait(pid, state_file, timeout)
    click.echo(outcome.message, err=not outcome.ok)
    return 0 if outcome.ok else 1


def register(group: click.Group) -> None:
    group.add_command(gateway_group)
