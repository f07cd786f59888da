"""validate / render / diff / config show through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl import __version__
from llmctl.cli import main
from llmctl.paths import Paths
from llmctl.secrets import ensure_backend_key, read_backend_key
from tests.conftest import minimal_config, write_config
from tests.gateway_runtime.test_config_check import fake_litellm_venv


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_in_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmctl", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"llmctl, version {__version__}"


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    code, out, err = run(capsys, "--config", str(path), "validate")
    assert code == 0
    assert "valid (1 backends, 1 models, 3 warnings)" in out
    assert "backends.llama.command: executable '/opt/llama/llama-server' not found" in err


def test_validate_strict_fails_on_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    code, _, err = run(capsys, "--config", str(path), "validate", "--strict")
    assert code == 2
    assert "warning(s) are errors with --strict" in err


def test_validate_bad_config_names_the_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = minimal_config()
    config["backends"]["llama"]["port"] = 99999
    path = write_config(tmp_path / "c.yaml", config)
    code, out, err = run(capsys, "--config", str(path), "validate")
    assert code == 2 and out == ""
    assert "invalid config (1 problem)" in err
    assert "backends.llama.port (line 6): Input should be less than or equal to 65535" in err


def test_validate_json_error_envelope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = minimal_config()
    config["gateway"]["port"] = 8080
    path = write_config(tmp_path / "c.yaml", config)
    code, out, _ = run(capsys, "--config", str(path), "validate", "--json")
    envelope = json.loads(out)
    assert code == 2
    assert envelope["llmctl_result_version"] == 1 and envelope["ok"] is False
    assert envelope["error"]["details"][0].startswith("gateway.port")


def test_config_found_through_env_and_xdg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = Path.home() / ".config" / "llmctl" / "llmctl.yaml"
    xdg.parent.mkdir(parents=True)
    write_config(xdg, minimal_config())
    assert run(capsys, "validate")[0] == 0
    monkeypatch.setenv("LLMCTL_CONFIG", str(tmp_path / "missing.yaml"))
    code, _, err = run(capsys, "validate")
    assert code == 2 and "missing.yaml" in err


def test_render_out_writes_units_and_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    out_dir = tmp_path / "x"
    code, out, _ = run(capsys, "--config", str(path), "render", "--out", str(out_dir))
    assert code == 0
    names = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert names == [
        "llmctl/gateway.yaml",
        "systemd/user/llmctl-gateway.service",
        "systemd/user/llmctl-gateway.socket",
        "systemd/user/llmctl-llama.service",
        "systemd/user/llmctl-supervisor.service",
        "systemd/user/llmctl.target",
    ]
    assert str(out_dir / "llmctl/gateway.yaml") in out


def test_render_of_invalid_config_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = minimal_config()
    config["models"]["tiny"]["backend"] = "nope"
    path = write_config(tmp_path / "c.yaml", config)
    out_dir = tmp_path / "x"
    code, _, _ = run(capsys, "--config", str(path), "render", "--out", str(out_dir))
    assert code == 2
    assert not out_dir.exists()


def test_render_without_out_stages_and_lists_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    code, out, _ = run(capsys, "--config", str(path), "render", "--json")
    data = json.loads(out)["data"]
    staging = Path(data["staging"])
    assert code == 0
    assert (staging / "systemd/user/llmctl-llama.service").is_file()
    assert {c["change"] for c in data["changes"]} == {"added"}
    # Nothing was installed.
    assert not (Path.home() / ".config/systemd/user/llmctl-llama.service").exists()


def test_diff_shows_installed_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    config_home = Path.home() / ".config"
    assert run(capsys, "--config", str(path), "render", "--out", str(config_home))[0] == 0
    assert run(capsys, "--config", str(path), "diff", "--exit-code") == (0, "", "")
    changed = minimal_config()
    changed["models"]["tiny"]["context"] = 1024
    write_config(path, changed)
    code, out, _ = run(capsys, "--config", str(path), "diff", "--exit-code")
    assert code == 1
    assert "-ExecStart=/opt/llama/llama-server" in out and "--ctx-size 1024" in out


def test_config_show_json_has_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", minimal_config())
    code, out, _ = run(capsys, "--config", str(path), "config", "show", "--json")
    config = json.loads(out)["data"]["config"]
    assert code == 0
    assert config["backends"]["llama"]["host"] == "127.0.0.1"
    assert config["gateway"]["routing_strategy"] == "simple-shuffle"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "No such command" in err


def test_json_error_names_the_command_not_the_config_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--config", str(tmp_path / "missing.yaml"), "validate", "--json")
    assert code == 2 and json.loads(out)["command"] == "validate"


def test_a_backend_key_is_never_in_render_diff_or_config_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = minimal_config()
    config["backends"]["vllm"] = {
        "kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001, "model": "qwen", "api_key": True,
    }  # fmt: skip
    config["models"]["qwen"] = {"backend": "vllm", "source": "Qwen/Qwen2.5-7B-Instruct"}
    path = write_config(tmp_path / "c.yaml", config)
    paths = Paths.from_env()
    ensure_backend_key(paths.backend_key_file("vllm"), "vllm", "VLLM_API_KEY")
    key = read_backend_key(paths.backend_key_file("vllm"), "VLLM_API_KEY")
    out_dir = tmp_path / "x"
    outputs = [
        run(capsys, "--config", str(path), "render", "--out", str(out_dir)),
        run(capsys, "--config", str(path), "render", "--json"),
        run(capsys, "--config", str(path), "diff"),
        run(capsys, "--config", str(path), "config", "show", "--json"),
    ]
    rendered = {p.name: p.read_text() for p in out_dir.rglob("*") if p.is_file()}
    assert f"EnvironmentFile={paths.backend_key_file('vllm')}" in rendered["llmctl-vllm.service"]
    assert "os.environ/LLMCTL_API_KEY_VLLM" in rendered["gateway.yaml"]
    for text in [*rendered.values(), *(out + err for _, out, err in outputs)]:
        assert key not in text


# --- gateway.litellm: LiteLLM's own check at validate ------------------------------------------


def passthrough_config(tmp_path: Path, command: Path, callbacks: list[str]) -> Path:
    config = minimal_config()
    config["gateway"]["command"] = str(command)
    config["gateway"]["litellm"] = {"litellm_settings": {"callbacks": callbacks}}
    return write_config(tmp_path / "c.yaml", config)


def test_validate_has_litellm_check_a_passthrough(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = passthrough_config(tmp_path, fake_litellm_venv(tmp_path), ["langfuse"])
    code, out, _ = run(capsys, "--config", str(path), "validate")
    assert code == 0
    assert "gateway.litellm: LiteLLM accepts the rendered gateway.yaml (LiteLLM: config OK (2 models))" in out
    code, out, _ = run(capsys, "--config", str(path), "validate", "--json")
    assert code == 0
    assert json.loads(out)["data"]["litellm_check"] == {
        "outcome": "accepted",
        "detail": "LiteLLM: config OK (2 models)",
    }


def test_validate_fails_when_litellm_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = passthrough_config(tmp_path, fake_litellm_venv(tmp_path), ["refuse-me"])
    code, out, err = run(capsys, "--config", str(path), "validate")
    assert code == 2 and out == ""
    assert "LiteLLM refuses the gateway.yaml this config renders" in err
    assert "gateway.litellm: No module named 'refuse-me'" in err
    code, out, _ = run(capsys, "--config", str(path), "validate", "--json")
    assert code == 2 and json.loads(out)["error"]["details"] == [
        "gateway.litellm: No module named 'refuse-me'",
        "gateway.litellm sets: litellm_settings.callbacks",
    ]


def test_validate_without_litellm_says_it_did_not_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = passthrough_config(tmp_path, tmp_path / "no" / "litellm", ["langfuse"])
    code, out, _ = run(capsys, "--config", str(path), "validate")
    assert code == 0
    assert "gateway.litellm: not checked by LiteLLM: LiteLLM is not installed" in out
    assert "llmctl's own checks passed" in out
    code, out, _ = run(capsys, "--config", str(path), "validate", "--json")
    assert json.loads(out)["data"]["litellm_check"]["outcome"] == "not-installed"


def test_validate_runs_no_litellm_without_a_passthrough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = minimal_config()
    config["gateway"]["command"] = str(fake_litellm_venv(tmp_path))
    path = write_config(tmp_path / "c.yaml", config)
    code, out, _ = run(capsys, "--config", str(path), "validate")
    assert code == 0 and "gateway.litellm" not in out
    code, out, _ = run(capsys, "--config", str(path), "validate", "--json")
    assert json.loads(out)["data"]["litellm_check"] is None
    assert not (tmp_path / "record.json").exists(), "the LiteLLM stand-in ran"
