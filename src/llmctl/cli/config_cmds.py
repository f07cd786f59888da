"""validate, render, diff, config show: everything that stays on paper."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_failure, emit_json, json_option, warn
from llmctl.errors import ConfigError, ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.gateway_runtime.config_check import LiteLLMCheck


@click.command()
@click.option("--strict", is_flag=True, help="Treat warnings (missing files) as errors.")
@json_option
@click.pass_obj
def validate(app: AppContext, strict: bool, as_json: bool) -> int:
    """Check the config; exit 2 with every problem named by its YAML path.

    With gateway.litellm set, LiteLLM itself also loads the gateway.yaml the config renders."""
    loaded = app.load(strict=strict)
    warnings = [w.describe() for w in loaded.warnings]
    check = litellm_check(app, loaded)
    if as_json:
        data = {"config": str(loaded.path), "valid": True, "warnings": warnings}
        emit_json("validate", data | {"litellm_check": check.as_json() if check else None})
        return 0
    for line in warnings:
        warn(line)
    config = loaded.config
    click.echo(
        f"{loaded.path}: valid ({len(config.backends)} backends, {len(config.models)} models"
        f"{', ' + str(len(warnings)) + ' warnings' if warnings else ''})"
    )
    if check is not None and check.outcome == "accepted":
        click.echo(f"gateway.litellm: LiteLLM accepts the rendered gateway.yaml ({check.detail})")
    elif check is not None:
        click.echo(f"gateway.litellm: not checked by LiteLLM: {check.detail}; llmctl's own checks passed")
    return 0


def litellm_check(app: AppContext, loaded: LoadedConfig) -> LiteLLMCheck | None:
    """LiteLLM's own check of the gateway.yaml `up` would write, when gateway.litellm is set
    (None otherwise). Raises ConfigError when LiteLLM refuses the file."""
    config = loaded.config
    if not (config.gateway.enabled and config.gateway.litellm.is_set()):
        return None
    from llmctl.executables import resolve_executable  # noqa: PLC0415
    from llmctl.gateway_runtime.config_check import check_gateway_file  # noqa: PLC0415
    from llmctl.render.gateway import render_gateway_config  # noqa: PLC0415

    text = render_gateway_config(config, app.serving(loaded))
    check = check_gateway_file(text, resolve_executable(config.gateway.command))
    if check.outcome == "refused":
        raise ConfigError(
            f"{loaded.path}: LiteLLM refuses the gateway.yaml this config renders",
            details=[
                f"gateway.litellm: {check.detail}",
                f"gateway.litellm sets: {', '.join(config.gateway.litellm.set_keys())}",
            ],
            hint="Fix the gateway.litellm setting LiteLLM's message is about (an unknown callback "
            "name reads 'Empty module name'); `llmctl render` stages the file to read.",
        )
    return check


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the files under DIR (DIR/systemd/user/*, DIR/llmctl/gateway.yaml).",
)
@json_option
@click.pass_obj
def render(app: AppContext, out: Path | None, as_json: bool) -> int:
    """Render the units and the gateway file; without --out, show what `up` would change."""
    from llmctl.install import ChangeKind, compare, write_tree  # noqa: PLC0415

    loaded = app.load()
    for problem in loaded.warnings:
        warn(problem.describe())
    stack = app.render(loaded)
    if out is not None:
        written = write_tree(stack.files, out)
        if as_json:
            emit_json("render", {"out": str(out), "files": [str(p) for p in written]})
        else:
            for path in written:
                click.echo(str(path))
        return 0
    # Staged in the layout `up` installs, so the files can be read (or verified) before `up`.
    staging = stage(stack.files, app.paths.state_dir / "staging")
    changes = [c for c in compare(stack, app.paths.config_home) if c.kind != ChangeKind.UNCHANGED]
    if as_json:
        emit_json(
            "render",
            {"staging": str(staging), "changes": [{"path": c.path, "change": c.kind} for c in changes]},
        )
        return 0
    click.echo(f"Rendered into {staging}")
    if not changes:
        click.echo("Installed files match the config; `llmctl up` would change nothing.")
    for change in changes:
        click.echo(f"  {change.kind.value:8} {app.paths.config_home / change.path}")
    return 0


def stage(files: dict[str, str], staging: Path) -> Path:
    """Replace the staging dir with freshly rendered files (never a mix of two renders)."""
    from llmctl.install import write_tree  # noqa: PLC0415

    staging.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".staging-", dir=staging.parent))
    write_tree(files, fresh)
    if staging.exists():
        old = staging.with_name(f".{staging.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        staging.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    fresh.rename(staging)
    return staging


@click.command()
@click.option("--exit-code", is_flag=True, help="Exit 1 when there are differences.")
@json_option
@click.pass_obj
def diff(app: AppContext, exit_code: bool, as_json: bool) -> int:
    """Show how the installed files differ from what the config renders."""
    from llmctl.install import ChangeKind, compare  # noqa: PLC0415

    loaded = app.load()
    changes = [
        c for c in compare(app.render(loaded), app.paths.config_home) if c.kind != ChangeKind.UNCHANGED
    ]
    if as_json:
        data = {"changes": [{"path": c.path, "change": c.kind, "diff": c.unified_diff()} for c in changes]}
        if exit_code and changes:
            differs = LlmctlError(
                f"{len(changes)} installed file(s) differ from what the config renders",
                details=[f"{c.kind.value} {c.path}" for c in changes],
                hint="llmctl up installs what the config renders.",
            )
            return emit_failure("diff", differs, report=data)
        emit_json("diff", data)
        return 0
    for change in changes:
        click.echo(change.unified_diff(), nl=False)
    return int(ExitCode.FAILED) if (exit_code and changes) else 0


@click.group("config")
def config_group() -> None:
    """Inspect the config."""


@config_group.command("show")
@json_option
@click.pass_obj
def config_show(app: AppContext, as_json: bool) -> int:
    """Print the effective config, with every default filled in."""
    import yaml  # noqa: PLC0415

    loaded = app.load()
    data = loaded.config.model_dump(mode="json")
    if as_json:
        emit_json("config show", {"path": str(loaded.path), "config": data})
    else:
        click.echo(f"# {loaded.path}")
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    return 0


def register(group: click.Group) -> None:
    for command in (validate, render, diff, config_group):
        group.add_command(command)
