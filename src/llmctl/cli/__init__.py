"""The command line: a thin click layer over typed functions.

Commands parse arguments, call a function that does the work and returns a result, and
render it as text or JSON. `LlmctlError` is caught here and nowhere else. Heavy modules
(pydantic, jinja2, httpx) are imported inside commands so `llmctl --version` stays fast.
"""

from __future__ import annotations

import sys

import click

from llmctl import __version__
from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_error
from llmctl.errors import ExitCode, LlmctlError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="llmctl")
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (default: $LLMCTL_CONFIG, else $XDG_CONFIG_HOME/llmctl/llmctl.yaml).",
)
@click.pass_context
def cli(ctx: click.Context, config_option: str | None) -> None:
    """Run local LLM backends and their gateway as systemd user services, from one config."""
    ctx.obj = AppContext(config_option=config_option)


def _register() -> None:
    from llmctl.cli import (  # noqa: PLC0415
        config_cmds,
        doctor_cmds,
        gateway_cmds,
        gpu_cmds,
        init_cmds,
        model_cmds,
        ready_cmd,
        runbook_cmds,
        snapshot_cmds,
        stack_cmds,
        supervisor_cmds,
        switch_cmds,
    )

    for module in (config_cmds, stack_cmds, gateway_cmds, model_cmds, ready_cmd, snapshot_cmds, runbook_cmds):
        module.register(cli)
    gpu_cmds.register(cli)
    switch_cmds.register(cli)
    supervisor_cmds.register(cli)
    doctor_cmds.register(cli)
    init_cmds.register(cli)


_register()


def _command_name(args: list[str]) -> str:
    """The subcommand in argv, for the JSON error envelope (global options take values)."""
    words = iter(args)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        result = cli.main(args=args, prog_name="llmctl", standalone_mode=False)
    except LlmctlError as err:
        command = _command_name(args)
        emit_error(err, command=command, as_json="--json" in args)
        return int(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return int(ExitCode.FAILED)
    except click.ClickException as err:
        err.show()
        return int(ExitCode.USAGE) if err.exit_code == 2 else int(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return int(result) if isinstance(result, int) else 0
