"""Rendering: golden files for every backend kind and the gateway, determinism, verify."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmctl.config.load import load_config, parse_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from tests import systemd_syntax
from tests.conftest import dump, minimal_config

REPO = Path(__file__).parents[2]
GOLDEN = REPO / "tests" / "golden" / "example"
EXAMPLE = REPO / "config" / "llmctl.example.yaml"
FAKE_HOME = Path("/home/user")


def fixed_options(config_path: Path) -> RenderOptions:
    """Options that do not depend on this machine, for byte-exact golden files."""
    return RenderOptions(
        config_path=config_path,
        paths=Paths(home=FAKE_HOME, config_home=FAKE_HOME / ".config", state_home=FAKE_HOME / ".local/state"),
        llmctl_argv=("/home/user/.local/pipx/venvs/llmctl/bin/python", "-m", "llmctl"),
        resolve=lambda command: Path(command.replace("~", str(FAKE_HOME), 1)),
    )


def example_config() -> Config:
    text = EXAMPLE.read_text().replace("~/", "/home/user/")
    config, _ = parse_config(text)
    return config


def test_golden_files_for_every_kind_and_the_gateway() -> None:
    stack = render_stack(example_config(), fixed_options(Path("/home/user/.config/llmctl/llmctl.yaml")))
    if os.environ.get("LLMCTL_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, text in stack.files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
    expected = {str(p.relative_to(GOLDEN)): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(stack.files) == sorted(expected), "every expected file, and no other"
    for rel, text in stack.files.items():
        assert text == expected[rel], f"{rel} differs from its golden file (LLMCTL_UPDATE_GOLDEN=1 rewrites)"


def test_rendering_is_deterministic() -> None:
    options = fixed_options(Path("/c.yaml"))
    assert render_stack(example_config(), options).files == render_stack(example_config(), options).files


def test_units_follow_what_each_backend_needs() -> None:
    files = render_stack(example_config(), fixed_options(Path("/c.yaml"))).files
    units = {
        rel.rsplit("/", 1)[-1]: systemd_syntax.parse_unit(text)
        for rel, text in files.items()
        if "systemd" in rel
    }

    def get(unit: str, key: str, section: str = "Service") -> list[str]:
        return [v for s, k, v in units[unit] if s == section and k == key]

    for unit in units:
        if unit.endswith(".service"):
            assert get(unit, "StartLimitBurst", "Unit") and not get(unit, "StartLimitBurst")
            assert get(unit, "KillMode") == ["control-group"]
            assert get(unit, "Type") == ["exec"]
            argv = systemd_syntax.exec_argv(get(unit, "ExecStart")[0])
            assert isinstance(argv[0], str) and argv[0].startswith("/")
    assert get("llmctl-vllm.service", "Restart") == ["always"]
    assert get("llmctl-llama-native.service", "Restart") == ["on-failure"]
    llama = systemd_syntax.exec_argv(get("llmctl-llama-native.service", "ExecStart")[0])
    for flag, value in (
        ("--host", "127.0.0.1"),
        ("--port", "8080"),
        ("--ctx-size", "8192"),
        ("--n-gpu-layers", "99"),
    ):
        assert llama[llama.index(flag) + 1] == value
    env = systemd_syntax.environment(get("llmctl-llama-native.service", "Environment"))
    assert env == {"CUDA_VISIBLE_DEVICES": "0", "GGML_CUDA_NO_PINNED": "1"}
    gate = systemd_syntax.exec_argv(get("llmctl-llama-native.service", "ExecStartPost")[0])
    assert gate[-1] == systemd_syntax.Variable("MAINPID")
    assert int(get("llmctl-vllm.service", "TimeoutStartSec")[0]) >= 1200
    # Secrets only through EnvironmentFile=, never inline.
    assert get("llmctl-gateway.service", "EnvironmentFile") == [
        "/home/user/.config/llmctl/gateway.env",
        "-/home/user/.config/llmctl/secrets.env",
    ]
    target = {k: v for _, k, v in units["llmctl.target"]}
    assert set(target["Wants"].split()) == {u for u in units if u.endswith(".service")}


def test_unresolvable_bare_command_is_a_clear_error() -> None:
    config, _ = parse_config(
        dump(
            minimal_config(
                backends={
                    "llama": {
                        "kind": "llama-server",
                        "command": "no-such-llama-server",
                        "port": 8080,
                        "model": "tiny",
                    }
                }
            )
        )
    )
    options = fixed_options(Path("/c.yaml"))
    options = RenderOptions(config_path=options.config_path, paths=options.paths, resolve=lambda c: None)
    with pytest.raises(LlmctlError, match=r"backends\.llama\.command: 'no-such-llama-server' is not on PATH"):
        render_stack(config, options)


def _fake_executable(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_rendered_example_passes_systemd_analyze_verify_silently(tmp_path: Path, paths: Paths) -> None:
    text = EXAMPLE.read_text()
    for old in (
        "/usr/local/bin/ollama",
        "~/venvs/llama-cpp/bin/python",
        "~/llama.cpp/build/bin/llama-server",
        "~/venvs/vllm/bin/vllm",
        "~/venvs/litellm/bin/litellm",
    ):
        text = text.replace(old, _fake_executable(tmp_path / "bin" / old.strip("~/").replace("/", "_")))
    config_path = tmp_path / "llmctl.yaml"
    config_path.write_text(text)
    loaded = load_config(config_path)
    stack = render_stack(loaded.config, RenderOptions(config_path=config_path, paths=paths))
    unit_dir = tmp_path / "out" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    for rel, body in stack.files.items():
        if rel.startswith("systemd/user/"):
            (unit_dir / rel.rsplit("/", 1)[-1]).write_text(body)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no", *sorted(str(p) for p in unit_dir.iterdir())],
        capture_output=True, text=True, check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(tmp_path / "out")},
    )  # fmt: skip
    # systemd-analyze exits 0 on warnings: any output at all is a failure.
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0
