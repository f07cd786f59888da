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

# Command name -> the module under llmctl.cli that defines it (its `register(group)` adds it).
# Only the module of the command being run is imported: each costs a few milliseconds, and
# `llmctl switch` or the readiness gate should not pay for `doctor` or `init`.
COMMANDS = {
    **dict.fromkeys(("config", "diff", "render", "validate"), "config_cmds"),
    **dict.fromkeys(("disable", "down", "enable", "logs", "recover", "restart", "rollback", "status", "up"),
                    "stack_cmds"),
    **dict.fromkeys(("events", "reset", "supervise"), "supervisor_cmds"),
    **dict.fromkeys(("gpus", "plan"), "gpu_cmds"),
    "doctor": "doctor_cmds",
    "gateway": "gateway_cmds",
    "init": "init_cmds",
    "model": "model_cmds",
    "router": "router_cmds",
    "runbook": "runbook_cmds",
    "snapshot": "snapshot_cmds",
    "switch": "switch_cmds",
    "wait-ready": "ready_cmd",
}  # fmt: skip


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import importlib  # noqa: PLC0415

            importlib.import_module(f"llmctl.cli.{COMMANDS[cmd_name]}").register(self)
        return self.commands.get(cmd_name)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
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


def command_path(args: list[str]) -> str:
    """The command in argv as its full path (`snapshot list`), for the JSON error envelope.

    Walks the command tree through groups only, so an argument of the command itself (a model
    id, a snapshot id) is never taken for a subcommand; global options take values.
    """
    path: list[str] = []
    command: click.Command = cli
    ctx = click.Context(cli)
    words = iter(args)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(ctx, word)
            path.append(word)
            if sub is None:
                break
            command = sub
    return " ".join(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        result = cli.main(args=args, prog_name="llmctl", standalone_mode=False)
    except LlmctlError as err:
        emit_error(err, command=command_path(args), as_json="--json" in args)
        return int(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return int(ExitCode.FAILED)
    except click.ClickException as err:
        code = ExitCode.USAGE if err.exit_code == 2 else ExitCode.FAILED
        if "--json" in args:
            # A program that asked for JSON gets the envelope for a bad argument too.
            path = command_path(args)
            hint = " ".join(["llmctl", *path.split(), "--help"])
            emit_error(
                LlmctlError(err.format_message(), hint=hint, exit_code=code), command=path, as_json=True
            )
        else:
            err.show()
        return int(code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return int(result) if isinstance(result, int) else 0
