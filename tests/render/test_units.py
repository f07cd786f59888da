"""Rendering: golden files for every backend kind and the gateway, determinism, verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmctl.config.load import load_config, parse_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.gateway_runtime import CHILD_STOP_TIMEOUT
from llmctl.gateway_runtime.interpreter import litellm_python
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


def test_the_router_unit_changes_with_every_setting_the_router_reads_at_start() -> None:
    # The router takes its models, their policies and the backends' addresses from the config
    # once; `up` restarts it only when its unit file changes, so each must change the file.
    base = yaml.safe_load(EXAMPLE.read_text().replace("~/", "/home/user/"))
    options = fixed_options(Path("/c.yaml"))

    def router_unit(*keys: str, value: object = None) -> str:
        data = yaml.safe_load(yaml.safe_dump(base))
        if keys:
            parent = data
            for key in keys[:-1]:
                parent = parent[key]
            parent[keys[-1]] = value
        config, _ = parse_config(yaml.safe_dump(data))
        return render_stack(config, options).files["systemd/user/llmctl-router.service"]

    plain = router_unit()
    coder = ("models", "qwen2.5-coder-7b")
    for keys, value in (
        (("models", "extra"), base["models"]["qwen2.5-coder-7b"]),
        ((*coder, "idle_unload"), "5m"),
        ((*coder, "pinned"), True),
        ((*coder, "min_residency"), "30s"),
        ((*coder, "load_timeout"), "99s"),
        (("backends", "llama-native", "idle_unload"), "10m"),
        (("backends", "llama-native", "port"), 8089),
        (("gateway", "drain_timeout"), "7s"),
    ):
        assert router_unit(*keys, value=value) != plain, keys
    assert "qwen2.5-coder-7b on llama-native: load_timeout=330s" in plain
    assert "backend llama-native: llama-server at 127.0.0.1:8080" in plain


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
            argv = systemd_syntax.exec_argv(get(unit, "ExecStart")[0])
            assert isinstance(argv[0], str) and argv[0].startswith("/")
            if unit not in ("llmctl-gateway.service", "llmctl-supervisor.service", "llmctl-router.service"):
                assert get(unit, "KillMode") == ["control-group"]
                assert get(unit, "Type") == ["exec"]
    assert get("llmctl-vllm.service", "Restart") == ["always"]
    # The router stops before every backend (drain first) and answers only on loopback.
    after = get("llmctl-router.service", "After", "Unit")[0].split()
    assert {u for u in units if u.endswith(".service") and u not in after} == {
        "llmctl-gateway.service",
        "llmctl-supervisor.service",
        "llmctl-router.service",
    }
    assert get("llmctl-router.service", "Type") == ["notify"]
    assert get("llmctl-router.socket", "ListenStream", "Socket") == ["127.0.0.1:4001"]
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
        "/home/user/.config/llmctl/router.env",  # gateway.on_demand: the router's key
    ]
    target = {k: v for _, k, v in units["llmctl.target"]}
    assert set(target["Wants"].split()) == {u for u in units if u != "llmctl.target"}


def test_gateway_is_a_socket_and_a_supervised_service() -> None:
    files = render_stack(example_config(), fixed_options(Path("/c.yaml"))).files
    socket_unit = systemd_syntax.parse_unit(files["systemd/user/llmctl-gateway.socket"])
    service = systemd_syntax.parse_unit(files["systemd/user/llmctl-gateway.service"])

    def get(parsed: list[tuple[str, str, str]], key: str, section: str = "Service") -> list[str]:
        return [v for s, k, v in parsed if s == section and k == key]

    assert get(socket_unit, "ListenStream", "Socket") == ["127.0.0.1:4000"]
    assert get(socket_unit, "Backlog", "Socket") == ["4096"]
    assert get(socket_unit, "NoDelay", "Socket") == ["true"]
    assert get(socket_unit, "PartOf", "Unit") == ["llmctl.target"]
    assert get(socket_unit, "WantedBy", "Install") == ["llmctl.target"]

    assert get(service, "Requires", "Unit") == ["llmctl-gateway.socket"]
    assert get(service, "After", "Unit")[0].split()[0] == "llmctl-gateway.socket"
    for key, value in (
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Sockets", "llmctl-gateway.socket"),
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
        ("RuntimeDirectory", "llmctl-gateway"),
    ):
        assert get(service, key) == [value], key
    assert not get(service, "ExecStartPost"), "READY=1 from the supervisor replaces the polling gate"
    serve = systemd_syntax.exec_argv(get(service, "ExecStart")[0])
    llmctl = ["/home/user/.local/pipx/venvs/llmctl/bin/python", "-m", "llmctl"]
    assert serve == [
        *llmctl, "gateway", "serve",
        # The entry point does not exist here: its venv's bin/python, as written.
        "--litellm-python", "/home/user/venvs/litellm/bin/python",
        "--config", "/home/user/.config/llmctl/gateway.yaml",
        "--runtime-dir", systemd_syntax.Variable("RUNTIME_DIRECTORY"),
    ]  # fmt: skip
    reload = systemd_syntax.exec_argv(get(service, "ExecReload")[0])
    assert reload[: len(llmctl) + 2] == [*llmctl, "gateway", "reload-wait"]
    assert reload[reload.index("--pid") + 1] == systemd_syntax.Variable("MAINPID")
    assert reload[reload.index("--runtime-dir") + 1] == systemd_syntax.Variable("RUNTIME_DIRECTORY")
    # reload-wait reports before systemd gives up on ExecReload= (TimeoutStartSec= bounds it).
    assert float(str(reload[reload.index("--timeout") + 1])) < int(get(service, "TimeoutStartSec")[0])
    assert int(get(service, "TimeoutStopSec")[0]) > CHILD_STOP_TIMEOUT
    env = systemd_syntax.environment(get(service, "Environment"))
    assert env == {"LITELLM_MODE": "PRODUCTION", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    assert get(service, "UnsetEnvironment") == ["HOST PORT CONFIG_FILE_PATH"]


@pytest.mark.parametrize(
    ("host", "listen"), [("::1", "[::1]:4000"), ("localhost", "127.0.0.1:4000"), ("0.0.0.0", "0.0.0.0:4000")]
)
def test_gateway_socket_listens_on_an_address(host: str, listen: str) -> None:
    config, _ = parse_config(
        dump(
            minimal_config(
                gateway={"command": "/opt/litellm/bin/litellm", "host": host, "allow_non_loopback": True}
            )
        )
    )
    files = render_stack(config, fixed_options(Path("/c.yaml"))).files
    parsed = systemd_syntax.parse_unit(files["systemd/user/llmctl-gateway.socket"])
    assert [v for s, k, v in parsed if k == "ListenStream"] == [listen]


def test_gateway_host_name_cannot_be_a_listen_stream() -> None:
    config, _ = parse_config(
        dump(
            minimal_config(
                gateway={
                    "command": "/opt/litellm/bin/litellm",
                    "host": "gw.example",
                    "allow_non_loopback": True,
                }
            )
        )
    )
    with pytest.raises(LlmctlError, match=r"gateway\.host: 'gw\.example' is not an IP address"):
        render_stack(config, fixed_options(Path("/c.yaml")))


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_litellm_python_comes_from_the_entry_points_shebang(tmp_path: Path) -> None:
    python = _script(tmp_path / "real" / "bin" / "python3.11", "")
    entry = _script(tmp_path / "venv" / "bin" / "litellm", f"#!{python}\nimport sys\n")
    assert litellm_python(entry) == python
    # pip's launcher for an interpreter path with spaces (or too long for #!).
    spaced = _script(tmp_path / "my venv" / "bin" / "python", "")
    launcher = f"#!/bin/sh\n'''exec' \"{spaced}\" \"$0\" \"$@\"\n' '''\nimport sys\n"
    assert litellm_python(_script(tmp_path / "my venv" / "bin" / "litellm", launcher)) == spaced


def test_litellm_python_falls_back_to_the_venvs_bin_python(tmp_path: Path) -> None:
    beside = _script(tmp_path / "venv" / "bin" / "python", "")
    for first_line in ("#!/usr/bin/env python3", "#!/gone/bin/python", "#!/bin/sh", "\x7fELF"):
        entry = _script(tmp_path / "venv" / "bin" / "litellm", f"{first_line}\nexit 0\n")
        assert litellm_python(entry) == beside, first_line
    # Not installed yet: rendered as written; `up` refuses the missing command and names it.
    assert litellm_python(tmp_path / "nowhere" / "bin" / "litellm") == tmp_path / "nowhere" / "bin" / "python"


def test_litellm_python_that_cannot_be_found_is_a_clear_error(tmp_path: Path) -> None:
    entry = _script(tmp_path / "opt" / "litellm", "#!/usr/bin/env python3\n")
    with pytest.raises(LlmctlError, match=r"cannot tell which python runs LiteLLM") as info:
        litellm_python(entry)
    assert "#!/usr/bin/env python3" in info.value.message and "gateway.command" in info.value.message
    config, _ = parse_config(dump(minimal_config(gateway={"command": str(entry)})))
    with pytest.raises(LlmctlError, match="cannot tell which python runs LiteLLM"):
        render_stack(
            config, RenderOptions(config_path=Path("/c.yaml"), paths=fixed_options(Path("/c")).paths)
        )


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
    # A python script, as LiteLLM's entry point is: the gateway unit runs its #! interpreter.
    path.write_text(f"#!{sys.executable}\nraise SystemExit(0)\n")
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
