"""`llmctl model ...`: helpers for model files."""

from __future__ import annotations

from pathlib import Path

import click

from llmctl.cli.output import emit_json, json_option
from llmctl.errors import ExitCode, LlmctlError


# Hidden with its only command: smoke models are for the tests and the demo (scripts/demo).
@click.group("model", hidden=True)
def model_group() -> None:
    """Model files."""


@model_group.command("smoke", hidden=True)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def smoke(path: Path, seed: int, as_json: bool) -> int:
    """Write a tiny random-weight llama GGUF to PATH for smoke tests.

    Its output is noise: it exists to prove that servers start, load a model and answer,
    without downloading real weights.
    """
    try:
        from llmctl.smoke_model import write_smoke_model  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise LlmctlError(str(exc), hint="reinstall llmctl (gguf is a dependency)") from None
    try:
        written = write_smoke_model(path, seed=seed)
    except ImportError as exc:
        raise LlmctlError(str(exc), hint="reinstall llmctl (gguf is a dependency)") from None
    except (OSError, ValueError) as exc:
        raise LlmctlError(f"cannot write {path}: {exc}", exit_code=ExitCode.FAILED) from None
    if as_json:
        emit_json("model smoke", {"path": str(written), "seed": seed})
        return 0
    click.echo(f"{written}: smoke-test model (random weights, output is noise)")
    return 0


def register(group: click.Group) -> None:
    group.add_command(model_group)
