"""Every command with --json prints one envelope that validates against result.schema.json.

The commands are enumerated from the click tree, so a new command fails here until it has
--json and a case in CASES. Exempt: internal entry points (hidden, themselves or by their
group: what the units run) and the streams in NO_JSON. The commands run in-process against
temp XDG dirs with no systemd user manager: what needs one answers with an error envelope
and exit 3.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from click.testing import CliRunner

from llmctl.cli import cli, command_path, main
from llmctl.cli.output import SCHEMA_FILE
from llmctl.paths import Paths
from llmctl.smoke_model import write_smoke_model
from tests.conftest import minimal_config, write_config

# Commands a user runs that have no --json, and why: streams, not results.
NO_JSON = {"logs": "streams journalctl's output"}

Args = Callable[[Path], list[str]]


def plain(*words: str) -> Args:
    return lambda tmp: list(words)


# One run per command: its arguments (tmp is the test's tmp_path) and the exit status it must
# have here: a valid config (llama serves the smoke model `tiny`), one snapshot, no GPU, no
# user manager. Extra runs cover the failure envelopes: usage errors and ok: false reports.
CASES: dict[str, tuple[Args, int]] = {
    "config show": (plain("config", "show"), 0),
    "diff": (plain("diff"), 0),
    "disable": (plain("disable"), 3),
    "doctor": (plain("doctor"), 1),
    "down": (plain("down"), 3),
    "enable": (plain("enable"), 3),
    "events": (plain("events"), 0),
    "gateway key": (plain("gateway", "key"), 1),
    "gpus": (lambda tmp: ["gpus", "--gpu-inventory", str(tmp / "gpus.json")], 0),
    "init": (lambda tmp: ["--config", str(tmp / "new.yaml"), "init"], 0),
    "model smoke": (lambda tmp: ["model", "smoke", str(tmp / "smoke.gguf")], 0),
    "plan": (lambda tmp: ["plan", "tiny", "--gpu-inventory", str(tmp / "gpus.json")], 0),
    "recover": (plain("recover"), 3),
    "render": (plain("render"), 0),
    "reset": (plain("reset", "llama"), 0),
    "restart": (plain("restart", "llama"), 3),
    "rollback": (plain("rollback"), 3),
    "runbook": (plain("runbook"), 0),
    "snapshot create": (plain("snapshot", "create", "-m", "test"), 0),
    "snapshot delete": (plain("snapshot", "delete", "latest"), 0),
    "snapshot diff": (plain("snapshot", "diff", "latest"), 0),
    "snapshot list": (plain("snapshot", "list"), 0),
    "snapshot pin": (plain("snapshot", "pin", "latest"), 0),
    "snapshot show": (plain("snapshot", "show", "latest"), 0),
    "snapshot unpin": (plain("snapshot", "unpin", "latest"), 0),
    "status": (plain("status"), 3),
    "switch": (lambda tmp: ["switch", "tiny", "--dry-run", "--gpu-inventory", str(tmp / "gpus.json")], 0),
    "up": (plain("up"), 3),
    "validate": (plain("validate"), 0),
}
FAILURES: dict[str, tuple[str, Args, int]] = {
    "switch without a user manager": ("switch", plain("switch", "tiny"), 3),
    "a missing argument": ("plan", plain("plan"), 2),
    "an unknown option": ("snapshot list", plain("snapshot", "list", "--nope"), 2),
    "an unknown snapshot": ("snapshot show", plain("snapshot", "show", "nope"), 2),
    "an unknown model": ("switch", plain("switch", "nope", "--dry-run"), 2),
    "diff --exit-code with differences": ("diff", plain("diff", "--exit-code"), 1),
    "snapshot diff --exit-code with differences": (
        "snapshot diff",
        plain("snapshot", "diff", "latest", "--exit-code"),
        1,
    ),
    "a model that does not fit": (
        "plan",
        lambda tmp: ["plan", "tiny", "--backend", "llama", "--gpu-inventory", str(tmp / "tiny-gpu.json")],
        1,
    ),
    "a switch that does not fit": (
        "switch",
        lambda tmp: ["switch", "tiny", "--dry-run", "--gpu-inventory", str(tmp / "tiny-gpu.json")],
        1,
    ),
    "an invalid config": ("validate", lambda tmp: ["--config", str(tmp / "bad.yaml"), "validate"], 2),
    "an import from a file that is not there": (
        "init",
        lambda tmp: ["--config", str(tmp / "new.yaml"), "init", "--from-litellm", str(tmp / "missing.yaml")],
        2,
    ),
}


def leaf_commands(
    group: click.Group = cli, prefix: tuple[str, ...] = (), hidden: bool = False
) -> Iterator[tuple[str, click.Command, bool]]:
    """(full name, command, internal) for every command below `group`."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        internal = hidden or command.hidden
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name), internal)
        else:
            yield " ".join((*prefix, name)), command, internal


def has_json(command: click.Command) -> bool:
    return any("--json" in p.opts for p in command.params)


TREE = list(leaf_commands())
# What must print the envelope: every command with --json, and every one a user sees but NO_JSON.
COMMANDS = {name: c for name, c, internal in TREE if has_json(c) or not (internal or name in NO_JSON)}


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files("llmctl.cli").joinpath(SCHEMA_FILE).read_text())
    return loaded


@pytest.fixture
def stack(tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment every case runs in (see CASES)."""
    for var in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(var, raising=False)  # no user manager, even under scripts/with-user-manager
    model = write_smoke_model(tmp_path / "tiny.gguf")
    config = minimal_config()
    config["models"]["tiny"]["source"] = str(model)
    paths.default_config_file.parent.mkdir(parents=True)
    write_config(paths.default_config_file, config)
    write_config(tmp_path / "bad.yaml", minimal_config(version=2))
    (tmp_path / "gpus.json").write_text(json.dumps({"gpus": []}))
    tiny_gpu = {"index": 0, "uuid": "GPU-0", "name": "tiny", "total_bytes": 1024, "used_bytes": 0}
    (tmp_path / "tiny-gpu.json").write_text(json.dumps({"gpus": [tiny_gpu | {"free_bytes": 1024}]}))
    assert main(["snapshot", "create", "-m", "setup"]) == 0
    config["models"]["tiny"]["context"] = 1024  # the config in use differs from the snapshot's
    write_config(paths.default_config_file, config)
    return tmp_path


def run_json(args: list[str]) -> tuple[int, str]:
    """main() as the llmctl script runs it (its error handling included), stdout captured."""
    runner = CliRunner()
    with runner.isolation() as (out, _err, _mixed):
        code = main([*args, "--json"])
    return code, out.getvalue().decode()


def check_envelope(command: str, code: int, stdout: str) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(stdout)  # the whole of stdout is one JSON document
    jsonschema.validate(envelope, schema())
    assert envelope["command"] == command
    assert envelope["ok"] is (code == 0)
    if code != 0:
        assert envelope["error"]["exit_code"] == code
    return envelope


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_every_command_has_json_or_a_reason_not_to() -> None:
    for name, command in COMMANDS.items():
        assert has_json(command), f"{name}: add --json (or, for a stream, its reason to NO_JSON)"
        assert name in CASES, f"{name}: add a case to CASES"
    assert set(CASES) == set(COMMANDS)
    assert set(NO_JSON) <= {name for name, _, _ in TREE}
    # The internal entry points are what the units run (ExecStart=, ExecReload=, the gate).
    internal = {name for name, _, hidden in TREE if hidden}
    assert {"supervise", "gateway serve", "gateway reload-wait", "wait-ready", "model smoke"} <= internal


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_output_validates(name: str, stack: Path) -> None:
    assert name in CASES, f"{name}: add a case to CASES"
    args, expected = CASES[name]
    code, stdout = run_json(args(stack))
    assert code == expected, stdout
    envelope = check_envelope(name, code, stdout)
    if code == 3:
        assert "no systemd user manager is reachable" in envelope["error"]["message"]


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failures_carry_an_error_never_data(case: str, stack: Path) -> None:
    name, args, expected = FAILURES[case]
    code, stdout = run_json(args(stack))
    assert code == expected, stdout
    envelope = check_envelope(name, code, stdout)
    assert "data" not in envelope and envelope["error"]["message"]


def test_a_report_explains_a_failure(stack: Path) -> None:
    """ok: false from a finding (here: does not fit) carries what was found, as data would."""
    _, args, _ = FAILURES["a model that does not fit"]
    error = json.loads(run_json(args(stack))[1])["error"]
    assert error["message"].startswith("tiny does not fit on llama: short by ")
    assert error["report"]["fits"] is False and error["report"]["model"] == "tiny"
    diff = json.loads(run_json(FAILURES["diff --exit-code with differences"][1](stack))[1])["error"]
    assert {c["path"] for c in diff["report"]["changes"]} >= {"systemd/user/llmctl-llama.service"}
    snapshot = json.loads(run_json(FAILURES["snapshot diff --exit-code with differences"][1](stack))[1])
    assert "-    context: 512\n+    context: 1024" in snapshot["error"]["report"]["diff"]


def test_command_path_walks_groups_only() -> None:
    assert command_path(["--config", "x.yaml", "snapshot", "show", "latest", "--json"]) == "snapshot show"
    assert command_path(["gateway", "key"]) == "gateway key"
    assert command_path(["plan", "snapshot"]) == "plan"  # an argument named like a command
    assert command_path(["--json"]) == ""


def test_status_unhealthy_is_an_error_with_the_units(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl import status, systemd  # noqa: PLC0415

    def unit(name: str, health: str, detail: str) -> status.UnitStatus:
        return status.UnitStatus(
            name, f"llmctl-{name}.service", "llama-server", "active", "running", 42, 1.0, 0, health, detail,
            None, [], 8080, None, None, None, runbook="backend-does-not-start" if health != "ok" else None,
        )  # fmt: skip

    units = [unit("llama", "failed", "exited"), unit("gateway", "ok", "ok")]
    monkeypatch.setattr(systemd, "require_manager", lambda: None)
    monkeypatch.setattr(status, "collect", lambda *a, **k: status.StackStatus(units))
    code, stdout = run_json(["status"])
    assert code == 3
    error = check_envelope("status", code, stdout)["error"]
    assert error["message"] == "not healthy: llama"
    assert error["details"] == ["llama: exited (llmctl runbook backend-does-not-start --backend llama)"]
    assert [u["name"] for u in error["report"]["units"]] == ["llama", "gateway"]
    assert error["report"]["healthy"] is False
