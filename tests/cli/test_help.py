"""Internal entry points (what the units run) stay out of the user's --help, and still work."""

from __future__ import annotations

import re

import pytest

from llmctl.cli import main

HIDDEN = ("supervise", "wait-ready", "model")


def listed(help_text: str) -> list[str]:
    """The command names under 'Commands:' in a click --help."""
    section = help_text.split("Commands:", 1)[1]
    return re.findall(r"^  (\S+)", section, flags=re.M)


def help_of(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    assert main([*words, "--help"]) == 0
    return capsys.readouterr().out


def test_internal_commands_are_not_listed(capsys: pytest.CaptureFixture[str]) -> None:
    top = listed(help_of(capsys))
    assert "status" in top and "snapshot" in top and "gateway" in top
    assert not set(HIDDEN) & set(top)
    assert listed(help_of(capsys, "gateway")) == ["key"]


def test_hidden_commands_still_run(capsys: pytest.CaptureFixture[str]) -> None:
    for words in (("supervise",), ("gateway", "serve"), ("gateway", "reload-wait"), ("model", "smoke")):
        assert "Usage: llmctl " + " ".join(words) in help_of(capsys, *words)
    assert main(["gateway", "reload-wait", "--pid", "1"]) == 2  # its own usage check still runs
    with pytest.raises(SystemExit) as gate:
        main(["wait-ready"])  # the readiness gate parses its own arguments (argparse)
    assert gate.value.code == 2
