"""The command table: complete, and only the command being run is imported."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from llmctl.cli import COMMANDS


def test_the_table_names_exactly_what_each_module_registers() -> None:
    registered: dict[str, str] = {}
    for module in sorted(set(COMMANDS.values())):
        group = click.Group()
        importlib.import_module(f"llmctl.cli.{module}").register(group)
        registered.update(dict.fromkeys(group.commands, module))
    assert registered == COMMANDS


def test_running_a_command_imports_only_its_module() -> None:
    code = (
        "import sys; from llmctl.cli import main; main(['switch', '--help']);"
        "print(sorted(m for m in sys.modules if m.startswith('llmctl.cli.') and m.endswith(('_cmds', '_cmd'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    assert "llmctl.cli.switch_cmds" in loaded
    assert "doctor_cmds" not in loaded and "init_cmds" not in loaded and "snapshot_cmds" not in loaded


def test_an_unknown_command_is_a_usage_error() -> None:
    from llmctl.cli import main  # noqa: PLC0415

    assert main(["swich"]) == 2
