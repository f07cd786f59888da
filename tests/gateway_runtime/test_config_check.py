"""LiteLLM's own config check, run in a stand-in for LiteLLM's venv: what it is given, how its
answers are read. (tests/integration/test_litellm_passthrough.py runs the real LiteLLM.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmctl.gateway_runtime import LITELLM_HOOKS_DIR
from llmctl.gateway_runtime.config_check import FAILED_PREFIX, check_gateway_file

# The venv's python: records how it was run, then answers as LiteLLM's --validate_config does
# (stdout "LiteLLM: config OK (N models)", or stderr "...failed: ERROR" and exit 1).
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
config = Path(sys.argv[4]).read_text()
record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "config": config}}
Path(RECORD).write_text(json.dumps(record))
if "refuse-me" in config:
    print("LiteLLM: Current Version = 1.106.2")
    print("{FAILED_PREFIX}No module named 'refuse-me'", file=sys.stderr)
    sys.exit(1)
if "crash" in config:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: something else", file=sys.stderr)
    sys.exit(1)
print("LiteLLM: config OK (2 models)")
"""


def fake_litellm_venv(root: Path) -> Path:
    """A LiteLLM venv stand-in: bin/litellm whose #! names bin/python. Returns the entry point."""
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON.replace("RECORD", repr(str(root / "record.json"))))
    python.chmod(0o755)
    entry = bin_dir / "litellm"
    entry.write_text(f"#!{python}\nimport sys\n")
    entry.chmod(0o755)
    return entry


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/litellm")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-shell")
    return fake_litellm_venv(tmp_path)


def record(venv: Path) -> dict[str, Any]:
    """How the stand-in was last run (it writes record.json beside its venv)."""
    data: dict[str, Any] = json.loads((venv.parents[2] / "record.json").read_text())
    return data


def test_litellm_loads_the_file_with_its_own_check_in_its_venv(venv: Path) -> None:
    check = check_gateway_file("model_list: []\n", venv)
    assert check.outcome == "accepted" and check.detail == "LiteLLM: config OK (2 models)"
    seen = record(venv)
    # The venv's python by path, isolated (-I), LiteLLM's CLI with --validate_config, our hooks.
    assert seen["argv"][:2] == ["-I", "-c"]
    assert "run_server(['--config', sys.argv[1], '--validate_config']" in seen["argv"][2]
    assert seen["argv"][4] == str(LITELLM_HOOKS_DIR)
    assert seen["config"] == "model_list: []\n"
    # In an empty directory of its own (removed afterwards), not the caller's.
    assert seen["cwd"] != str(Path.cwd()) and not Path(seen["cwd"]).exists()


def test_the_check_gets_no_secrets_and_no_database_from_the_callers_environment(venv: Path) -> None:
    check_gateway_file("model_list: []\n", venv)
    env = record(venv)["env"]
    assert "DATABASE_URL" not in env and "OPENAI_API_KEY" not in env
    assert env["LITELLM_MASTER_KEY"].startswith("sk-llmctl-validate-")
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_litellms_refusal_is_its_own_message(venv: Path) -> None:
    check = check_gateway_file("litellm_settings: {callbacks: [refuse-me]}\n", venv)
    assert check.outcome == "refused" and check.detail == "No module named 'refuse-me'"


def test_any_other_failure_is_a_refusal_with_its_last_lines(venv: Path) -> None:
    check = check_gateway_file("crash: true\n", venv)
    assert check.outcome == "refused" and "RuntimeError: something else" in check.detail


def test_without_litellm_there_is_no_check_and_it_says_why(tmp_path: Path) -> None:
    assert check_gateway_file("{}", None).outcome == "not-installed"
    missing = check_gateway_file("{}", tmp_path / "nowhere" / "bin" / "litellm")
    assert missing.outcome == "not-installed" and "does not exist" in missing.detail


def test_a_check_that_hangs_is_bounded(venv: Path) -> None:
    def hangs(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    check = check_gateway_file("{}", venv, run=hangs, timeout=5)
    assert check.outcome == "refused" and "did not finish in 5 s" in check.detail
