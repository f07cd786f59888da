"""`llmctl init --from-litellm PATH`: import, check, write, and say what became of each entry.

Order of work, so that a refusal changes nothing: read the source (exit 2 if it is not a
LiteLLM config), import it, load the result with the strict schema, refuse an existing config
without --force; only then write the moved keys into secrets.env, and the config last (after
a snapshot of the one it replaces), so the config never names a key that is not there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmctl.cli.output import emit_json
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.cli.context import AppContext
    from llmctl.init.from_litellm import Import

OUTCOME_TITLES = {"mapped": "mapped", "guessed": "guessed (check these)", "unmapped": "not carried"}


def import_from_litellm(app: AppContext, source: Path, *, force: bool, as_json: bool) -> int:
    from llmctl import init as init_mod  # noqa: PLC0415
    from llmctl import secrets  # noqa: PLC0415
    from llmctl.cli.init_cmds import report_written  # noqa: PLC0415
    from llmctl.init import from_litellm, litellm_source  # noqa: PLC0415

    source = source.expanduser().absolute()
    config_path = app.config_path
    data = litellm_source.read_source(source)
    if config_path.exists() and config_path.resolve() == source.resolve():
        raise LlmctlError(
            f"{source} is the file the llmctl config would be written to",
            hint="Write the llmctl config elsewhere: llmctl --config NEW.yaml init --from-litellm ...",
            exit_code=ExitCode.USAGE,
        )
    detection = init_mod.detect(init_mod.Sources(home=app.paths.home, env=os.environ))
    secrets_file = app.paths.secrets_env_file
    result = from_litellm.import_litellm(
        source,
        data,
        detection,
        probe=from_litellm.probe_port,
        existing_secrets=secrets.env_file_values(secrets_file),
    )
    text = from_litellm.render_import(result)
    init_mod.check_valid(text, str(config_path))
    init_mod.write_action(config_path, text, force=force)  # refuses before anything is written
    printable = re.sub(r"[\x00-\x1f\x7f]", "?", str(source))
    secrets.add_secrets(secrets_file, result.secrets, f"moved here by llmctl init --from-litellm {printable}")
    written = init_mod.write_config(config_path, text, force=force, paths=app.paths)
    if as_json:
        emit_json(
            "init",
            {
                "config_path": str(config_path),
                "action": written.action,
                "snapshot": written.snapshot,
                "demo": False,
                "secrets_file": str(secrets_file),
                "from_litellm": result.as_dict(),
            },
        )
        return 0
    _print_report(result, secrets_file)
    report_written(written)
    return 0


def _print_report(result: Import, secrets_file: Path) -> None:
    counts = result.counts()
    click.echo(
        f"imported {result.source}: {counts['mapped']} mapped, {counts['guessed']} guessed, "
        f"{counts['unmapped']} not carried"
    )
    for outcome, title in OUTCOME_TITLES.items():
        entries = [e for e in result.report if e.outcome == outcome]
        if not entries:
            continue
        click.echo(f"{title}:")
        for e in entries:
            click.echo(f"  {e.entry}" + (f" -> {e.to}" if e.to else "") + f": {e.why}")
    if result.secrets:
        click.echo(f"moved into {secrets_file} (mode 0600): {', '.join(sorted(result.secrets))}")
    if result.needed:
        click.echo(
            f"set in {secrets_file} before llmctl up (the config reads them; it does not set them): "
            + ", ".join(result.needed)
        )
