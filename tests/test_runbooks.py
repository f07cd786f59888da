"""Runbooks and code in step: every runbook renders, every runbook named anywhere exists, and
every `llmctl ...` command a runbook shows parses with the current CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from llmctl import runbooks
from llmctl.cli import cli, main
from llmctl.signatures import SIGNATURES
from tests.conftest import minimal_config, write_config

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## Symptoms", "## Diagnose", "## Fix", "## Verify")
# The runbooks the issue asks for, at least.
REQUIRED = {
    "backend-does-not-start",
    "model-out-of-memory",
    "backend-restart-loop",
    "gpu-memory-not-freed",
    "gpu-missing",
    "switch-rolled-back",
    "gateway-errors",
    "user-manager-not-running",
    "restore-snapshot-by-hand",
    "moving-to-new-machine",
}
NAMES = sorted(book.name for book in runbooks.list_runbooks())
FENCE = re.compile(r"^( *)```([\w-]*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
SHELL_INFO = {"sh", "bash", "shell", "console"}
# Runbook names are words joined by hyphens ("llmctl runbook lists them" names none).
RUNBOOK_REFERENCE = re.compile(r"llmctl runbook ([a-z0-9]+(?:-[a-z0-9]+)+)")
VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def shell_blocks(text: str) -> list[str]:
    return [m.group(3) for m in FENCE.finditer(text) if m.group(2) in SHELL_INFO]


def inline_commands(text: str) -> list[str]:
    """`llmctl ...` in inline code outside fenced blocks."""
    prose = FENCE.sub("", text)
    return re.findall(r"`(llmctl [^`]+)`", prose)


def llmctl_commands(line: str) -> list[list[str]]:
    """Every llmctl command in one shell line: its words after `llmctl` ($(...) included)."""
    found = [shlex.split(inner)[1:] for inner in re.findall(r"\$\((llmctl [^()]*)\)", line)]
    line = re.sub(r"\$\([^()]*\)", "X", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    command: list[str] = []
    for word in [*lexer, ";"]:
        if word and set(word) <= set(";&|()"):
            if command and command[0] == "llmctl":
                found.append(command[1:])
            command = []
        else:
            command.append(word)
    return found


def commands_of(text: str) -> list[list[str]]:
    commands = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            commands.extend(llmctl_commands(line.strip().removeprefix("$ ")))
    commands.extend(shlex.split(span)[1:] for span in inline_commands(text))
    return commands


def parse_with_cli(words: list[str]) -> click.Context:
    """Parse like `llmctl WORDS` would, down to the leaf command, without running anything."""
    command: click.Command = cli
    ctx = command.make_context("llmctl", list(words), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"no command {rest[0]!r}"
        command = sub
        ctx = command.make_context(name, args, parent=ctx, resilient_parsing=False)
    return ctx


def test_the_required_runbooks_exist() -> None:
    assert set(NAMES) >= REQUIRED


@pytest.mark.parametrize("name", NAMES)
def test_runbook_has_a_title_and_the_four_sections_in_order(name: str) -> None:
    text = (runbooks.runbooks_dir() / f"{name}.md").read_text()
    assert text.startswith("# ") and len(text.splitlines()[0]) > 5
    positions = [text.find(f"\n{section}\n") for section in SECTIONS]
    assert all(p > 0 for p in positions), f"{name}: missing one of {SECTIONS}"
    assert positions == sorted(positions), f"{name}: sections out of order"
    for section, start in zip(SECTIONS, positions, strict=True):
        body = text[start + len(section) + 1 :].split("\n## ", 1)[0]
        assert body.strip(), f"{name}: {section} is empty"


@pytest.mark.parametrize("name", NAMES)
def test_runbook_renders_with_placeholders(name: str) -> None:
    rendered = runbooks.render(name)
    assert "{{" not in rendered and "{%" not in rendered
    for variable in VARIABLE.findall((runbooks.runbooks_dir() / f"{name}.md").read_text()):
        assert variable in runbooks.PLACEHOLDERS


@pytest.mark.parametrize("name", NAMES)
def test_runbook_renders_with_a_real_configs_values(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "llmctl.yaml", minimal_config(gateway={"port": 4321}))
    code = main(["--config", str(config), "runbook", name, "--backend", "llama"])
    out, err = capsys.readouterr()
    assert code == 0, err
    used = set(VARIABLE.findall((runbooks.runbooks_dir() / f"{name}.md").read_text()))
    expected = {
        "name": "llama",
        "unit": "llmctl-llama.service",
        "port": "8080",
        "kind": "llama-server",
        "config_path": str(config),
        "gateway_unit": "llmctl-gateway.service",
        "gateway_port": "4321",
    }
    for variable in used & set(expected):
        assert expected[variable] in out, f"{name}: {{{{ {variable} }}}} not filled in"
    assert "{{" not in out


def test_runbook_list_names_every_runbook(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == NAMES


def referenced_runbooks() -> dict[str, list[str]]:
    """Runbook names mentioned as `llmctl runbook NAME` in the code and the docs, and by the
    failure signatures: {name: [where]}."""
    found: dict[str, list[str]] = {}
    for signature in SIGNATURES:
        found.setdefault(signature.runbook, []).append(f"signature {signature.id}")
    files = [*sorted((REPO / "src").rglob("*.py")), *sorted(runbooks.runbooks_dir().glob("*.md"))]
    files.append(REPO / "README.md")
    for path in files:
        for name in RUNBOOK_REFERENCE.findall(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_every_runbook_named_in_code_and_docs_exists() -> None:
    found = referenced_runbooks()
    assert "switch-rolled-back" in found  # recovery.py names it; the scan must see string literals
    missing = {name: where for name, where in found.items() if name not in NAMES}
    assert not missing


def test_every_llmctl_command_in_the_runbooks_parses() -> None:
    checked = 0
    failures = []
    for name in NAMES:
        for words in commands_of(runbooks.render(name)):
            try:
                parse_with_cli(words)
            except click.ClickException as exc:
                failures.append(f"{name}: `llmctl {shlex.join(words)}`: {exc.format_message()}")
            checked += 1
    assert not failures
    assert checked > 50


def test_the_command_check_catches_what_does_not_parse() -> None:
    with pytest.raises(click.UsageError):
        parse_with_cli(["up", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_with_cli(["no-such-command"])
    with pytest.raises(click.UsageError):
        parse_with_cli(["restart"])  # NAME... is required
    assert parse_with_cli(["--config", "x.yaml", "snapshot", "show", "ID"]).info_name == "show"


def test_commands_are_found_in_pipes_substitutions_and_inline_code() -> None:
    text = (
        "Run `llmctl status` first.\n\n```sh\n"
        'curl -H "Authorization: Bearer $(llmctl gateway key)" http://x  # llmctl not-this\n'
        "llmctl logs a -n 5 | grep x && llmctl up b\n"
        "systemctl --user status llmctl-a.service\n```\n\n```\nllmctl: error: output, not a command\n```\n"
    )
    assert commands_of(text) == [["gateway", "key"], ["logs", "a", "-n", "5"], ["up", "b"], ["status"]]
