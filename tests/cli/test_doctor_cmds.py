"""llmctl doctor through the CLI: the table, --json, and the exit status."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from llmctl import doctor
from llmctl.cli import main
from llmctl.cli.doctor_cmds import format_checks
from llmctl.doctor import Check, GpuFacts
from tests.doctor.fakes import fake_probes, good_config


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The probes `llmctl doctor` will use: a healthy machine unless a test changes them."""
    overrides: dict[str, Any] = {}

    def make() -> doctor.Probes:
        return fake_probes(**overrides)

    monkeypatch.setattr(doctor, "Probes", functools.partial(make))
    return overrides


def test_warnings_only_exit_0_with_a_table(
    tmp_path: Path, probes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = good_config(tmp_path)
    code, out, _ = run(capsys, "--config", str(config), "doctor")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["config", "OK"]
    assert any(line.split()[:2] == ["units", "WARN"] for line in lines)
    assert "fix: llmctl up" in out  # under the warning
    assert "llama (llama-server):" not in out  # details of passing checks only with -v
    assert lines[-1] == "8 ok, 3 warning(s), 0 failure(s)"
    _, verbose, _ = run(capsys, "--config", str(config), "doctor", "-v")
    assert "llama (llama-server):" in verbose


def test_a_failure_exits_1(
    tmp_path: Path, probes: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    probes["port_in_use"] = lambda host, port: port == 8080
    probes["port_holders"] = lambda port: [doctor.PortHolder(4242, "python3", None)]
    code, out, _ = run(capsys, "--config", str(good_config(tmp_path)), "doctor")
    assert code == 1
    assert "ports         FAIL  taken by another process: llama" in out
    assert "llama: 127.0.0.1:8080 in use by python3 (pid 4242), not by llmctl-llama.service" in out


def test_json(tmp_path: Path, probes: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    probes["gpus"] = lambda: GpuFacts(True, "", "550.1", ((0, "GPU-a", "RTX 4090", 24 * 1024**3),))
    code, out, _ = run(capsys, "--config", str(good_config(tmp_path)), "doctor", "--json")
    assert code == 0
    envelope = json.loads(out)
    assert (envelope["command"], envelope["ok"], envelope["llmctl_result_version"]) == ("doctor", True, 1)
    assert envelope["data"]["status"] == "warn"
    checks = {c["name"]: c for c in envelope["data"]["checks"]}
    assert list(checks) == [
        "config", "user-manager", "linger", "unit-files", "units", "executables", "ports", "gpus", "models",
        "disk", "gateway-key",
    ]  # fmt: skip
    assert checks["gpus"] == {
        "name": "gpus",
        "status": "ok",
        "reason": "1 GPU(s), driver 550.1",
        "fix": None,
        "details": ["GPU 0: RTX 4090, 24.0 GiB, GPU-a"],
    }

    probes["manager_reachable"] = lambda: False
    code, out, _ = run(capsys, "--config", str(tmp_path / "none.yaml"), "doctor", "--json")
    envelope = json.loads(out)
    assert code == 1 and envelope["ok"] is False and "data" not in envelope
    error = envelope["error"]
    assert (error["exit_code"], error["message"]) == (1, "2 check(s) failed: config, user-manager")
    assert [line.split(":")[0] for line in error["details"]] == ["config", "user-manager"]
    assert error["report"]["status"] == "fail"
    assert [c["name"] for c in error["report"]["checks"] if c["status"] == "fail"] == [
        "config",
        "user-manager",
    ]


def test_format_checks_wraps_fixes_under_the_check() -> None:
    text = format_checks(
        [
            Check("config", "ok", "fine", details=("hidden",)),
            Check("ports", "fail", "taken", fix="stop " + "the other process " * 8, details=("8080 by x",)),
        ]
    )
    lines = text.splitlines()
    assert lines[0] == "config  OK    fine"
    assert lines[1] == "ports   FAIL  taken"
    assert lines[2] == "              8080 by x"
    assert lines[3].startswith("              fix: stop the other process")
    assert lines[4].startswith(" " * 19 + "other process")
    assert lines[-1] == "1 ok, 0 warning(s), 1 failure(s)"
    assert "\x1b[" in format_checks([Check("a", "warn", "w")], color=True)
