"""The `llmctl` command (and `python -m llmctl`): the commands on hot paths skip click.

`wait-ready` runs at every unit start (`ExecStartPost=`), `status` is what scripts and
monitors poll, and `up NAME` is how a model is brought up by hand; click and the CLI's modules
cost ~40-50 ms of each. They go straight to their function when their arguments are the plain
forms handled here; anything else (help, another option, a config that must be loaded, an
error to report) goes to the click CLI, which does the same work and renders every error.
`status` reads and changes nothing, so handing it on after a start costs time, never a
difference; `up NAME` (llmctl.quick_up) hands on only before it has changed anything.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from llmctl.config.schema import Config


def main(argv: list[str] | None = None) -> int:
    return dispatch(sys.argv[1:] if argv is None else argv)[0]


def run() -> NoReturn:
    """The `llmctl` command. After a quick path, the process ends without the interpreter's
    teardown (~5 ms of a 30 ms readiness gate): it has printed its result, and holds no
    thread, child or file that an exit would not end as well. The click CLI exits normally
    (its commands may have threads to join, files to flush)."""
    code, quick = dispatch(sys.argv[1:])
    if quick:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def dispatch(args: list[str]) -> tuple[int, bool]:
    """(exit code, whether a quick path answered)."""
    if args[:1] == ["wait-ready"]:
        from llmctl.readiness import gate_main  # noqa: PLC0415

        return gate_main(args[1:]), True
    try:
        code = _quick(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)  # as the click CLI says it
        return 130, True
    if code is not None:
        return code, True
    from llmctl.cli import main as cli_main  # noqa: PLC0415

    return cli_main(args), False


def _quick(args: list[str]) -> int | None:
    status = status_arguments(args)
    if status is not None:
        return quick_status(*status)
    up = up_arguments(args)
    if up is None:
        return None
    from llmctl import systemd  # noqa: PLC0415
    from llmctl.render.names import unit_name  # noqa: PLC0415

    # Asked first, so that systemctl answers while the rest is imported and the record read.
    shown = systemd.ShowJob([n if n.endswith(".service") else unit_name(n) for n in up[1]])
    try:
        from llmctl.quick_up import quick_up  # noqa: PLC0415

        return quick_up(*up, shown=shown)
    finally:
        shown.close()


def up_arguments(args: list[str]) -> tuple[str | None, tuple[str, ...], bool] | None:
    """(--config, NAMEs, --json) of `[--config PATH] up [--json] NAME...`, else None (click
    parses it: no NAME is the whole stack, another option is click's)."""
    config, rest = _config_option(args)
    if rest[:1] != ["up"]:
        return None
    rest = rest[1:]
    names = tuple(a for a in rest if a != "--json")
    if not names or any(not n or n.startswith("-") for n in names) or rest.count("--json") > 1:
        return None
    return config, names, "--json" in rest


def _config_option(args: list[str]) -> tuple[str | None, list[str]]:
    """`--config PATH` or `--config=PATH` before the command, and the arguments after it."""
    if args[:1] == ["--config"] and len(args) >= 2:
        return args[1] or None, args[2:]
    if args[:1] and args[0].startswith("--config="):
        return args[0].removeprefix("--config=") or None, args[1:]
    return None, list(args)


def status_arguments(args: list[str]) -> tuple[str | None, bool] | None:
    """(--config, --json) of `[--config PATH] status [--json]`, else None (click parses it)."""
    config, rest = _config_option(args)
    if rest not in (["status"], ["status", "--json"]):
        return None
    return config or None, rest == ["status", "--json"]


class _HandOn(Exception):
    """The quick path cannot answer alone: the click CLI runs the command."""


def quick_status(config_option: str | None, as_json: bool) -> int | None:
    """`llmctl status [--json]` when the config is the applied one (status then judges the
    installed units and never loads it); None when the click CLI must run it."""

    from llmctl import systemd  # noqa: PLC0415
    from llmctl.paths import Paths  # noqa: PLC0415

    # Asked first, so that systemctl answers while the rest is imported: whether a manager
    # answers, and the state of every llmctl unit installed (status judges some of them).
    paths = Paths.from_env()
    manager = systemd.begin_manager_check()
    shown = systemd.ShowJob(sorted(path.name for path in paths.unit_dir.glob("llmctl-*.service")))
    from llmctl import status  # noqa: PLC0415
    from llmctl.errors import ExitCode, LlmctlError  # noqa: PLC0415

    def load() -> tuple[Config, dict[str, str]]:
        raise _HandOn  # an edited config: loading it is the CLI's (pydantic, its errors)

    try:
        manager.require()
        config_path = paths.resolve_config_file(config_option, os.environ)
        result = status.collect_current(paths, config_path, load, shown=shown)
    except (_HandOn, LlmctlError):
        return None
    finally:
        shown.close()
    if as_json:
        from llmctl import envelope  # noqa: PLC0415

        if result.healthy:
            print(envelope.dumps(envelope.success("status", result.as_dict())))
        else:
            print(envelope.dumps(envelope.failure("status", status.unhealthy(result), result.as_dict())))
    else:
        print(status.format_table(result))
    return 0 if result.healthy else int(ExitCode.NOT_RUNNING)
