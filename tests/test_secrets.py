"""Generated keys: created once with mode 0600, never readable by others."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llmctl.config.load import parse_config
from llmctl.errors import LlmctlError
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import (
    ensure_backend_key,
    ensure_gateway_key,
    ensure_redis_password,
    ensure_router_key,
    gateway_variable,
    installed_backend_keys,
    read_backend_key,
    read_gateway_key,
    read_redis_password,
    read_router_key,
)
from tests.conftest import dump, minimal_config


def test_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "llmctl" / "gateway.env"
    assert ensure_gateway_key(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_gateway_key(path)
    assert key.startswith("sk-") and len(key) > 40
    assert ensure_gateway_key(path) is False
    assert read_gateway_key(path) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.env"
    ensure_gateway_key(path)
    path.chmod(0o644)
    with pytest.raises(LlmctlError, match="readable by others") as info:
        ensure_gateway_key(path)
    assert info.value.hint == f"chmod 600 {path}"


def test_missing_key_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="no gateway key yet"):
        read_gateway_key(tmp_path / "gateway.env")


# --- API keys of backends started with one -------------------------------------------------------


def test_backend_key_file_holds_one_key_under_both_names(paths: Paths) -> None:
    path = paths.backend_key_file("big-vllm")
    assert ensure_backend_key(path, "big-vllm", "VLLM_API_KEY") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert gateway_variable("big-vllm") == "LLMCTL_API_KEY_BIG_VLLM"
    key = read_backend_key(path, "VLLM_API_KEY")
    assert key.startswith("sk-") and len(key) > 40
    assert read_backend_key(path, "LLMCTL_API_KEY_BIG_VLLM") == key
    assert ensure_backend_key(path, "big-vllm", "VLLM_API_KEY") is False
    assert read_backend_key(path, "VLLM_API_KEY") == key
    assert [p.name for p in path.parent.iterdir()] == ["big-vllm.env"]  # no temporary file left


def test_backend_key_file_others_can_read_or_that_lacks_a_name_is_refused(paths: Paths) -> None:
    path = paths.backend_key_file("vllm")
    ensure_backend_key(path, "vllm", "VLLM_API_KEY")
    path.chmod(0o640)
    with pytest.raises(LlmctlError, match="readable by others") as info:
        ensure_backend_key(path, "vllm", "VLLM_API_KEY")
    assert info.value.hint == f"chmod 600 {path}"
    path.chmod(0o600)
    path.write_text("VLLM_API_KEY=sk-only-one-name\n")
    with pytest.raises(LlmctlError, match="has no LLMCTL_API_KEY_VLLM="):
        ensure_backend_key(path, "vllm", "VLLM_API_KEY")
    with pytest.raises(LlmctlError, match="no API key file"):
        read_backend_key(paths.backend_key_file("other"), "VLLM_API_KEY")


def _install(paths: Paths, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (paths.config_home / rel).parent.mkdir(parents=True, exist_ok=True)
        (paths.config_home / rel).write_text(text)


def test_installed_backend_keys_are_those_of_the_units_that_read_a_key_file(paths: Paths) -> None:
    config, _ = parse_config(
        dump(
            minimal_config(
                backends={
                    "keyed": {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001, "model": "a",
                              "api_key": True},
                    "open": {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8002, "model": "b"},
                    "llama": {"kind": "llama-server", "command": "/opt/llama/llama-server", "port": 8080},
                },
                models={"a": {"backend": "keyed", "source": "org/a"}, "b": {"backend": "open", "source": "org/b"}},
            )
        )
    )  # fmt: skip
    options = RenderOptions(config_path=Path("/c.yaml"), paths=paths, resolve=Path)
    _install(paths, render_stack(config, options).files)
    assert installed_backend_keys(paths) == {}, "no key file yet: nothing to send"
    ensure_backend_key(paths.backend_key_file("keyed"), "keyed", "VLLM_API_KEY")
    ensure_backend_key(paths.backend_key_file("open"), "open", "VLLM_API_KEY")  # left over: not read
    key = read_backend_key(paths.backend_key_file("keyed"), "VLLM_API_KEY")
    assert installed_backend_keys(paths) == {"http://127.0.0.1:8001": key}


# --- the Redis password (gateway.cache) ---------------------------------------------------------


def test_the_redis_password_is_generated_once_into_two_owner_only_files(paths: Paths) -> None:
    env, auth = paths.redis_env_file, paths.redis_auth_file
    assert ensure_redis_password(env, auth) is True
    password = read_redis_password(env)
    assert len(password) >= 40
    for path in (env, auth):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert f"LLMCTL_REDIS_PASSWORD={password}" in env.read_text().splitlines()
    assert f"requirepass {password}" in auth.read_text().splitlines()
    assert ensure_redis_password(env, auth) is False
    assert read_redis_password(env) == password


def test_the_include_follows_redis_env(paths: Paths) -> None:
    """redis.env is where the password is kept: a lost, stale or shared include is rewritten."""
    env, auth = paths.redis_env_file, paths.redis_auth_file
    ensure_redis_password(env, auth)
    password = read_redis_password(env)
    auth.unlink()
    assert ensure_redis_password(env, auth) is False
    assert f"requirepass {password}" in auth.read_text()
    auth.write_text("requirepass stale\n")
    auth.chmod(0o644)
    ensure_redis_password(env, auth)
    assert f"requirepass {password}" in auth.read_text() and stat.S_IMODE(auth.stat().st_mode) == 0o600


def test_a_shared_or_unusable_redis_env_is_refused(paths: Paths) -> None:
    env, auth = paths.redis_env_file, paths.redis_auth_file
    ensure_redis_password(env, auth)
    env.chmod(0o640)
    with pytest.raises(LlmctlError, match="readable by others"):
        ensure_redis_password(env, auth)
    env.chmod(0o600)
    env.write_text("LLMCTL_REDIS_PASSWORD=two words\n")
    with pytest.raises(LlmctlError, match="no usable LLMCTL_REDIS_PASSWORD"):
        read_redis_password(env)
    with pytest.raises(LlmctlError, match="no Redis password yet"):
        read_redis_password(paths.llmctl_config_dir / "missing.env")


# --- the router's key ----------------------------------------------------------------------------


def test_the_router_key_is_made_once_owner_only_and_a_shared_one_is_refused(paths: Paths) -> None:
    path = paths.router_key_file
    with pytest.raises(LlmctlError, match="no router key file") as missing:
        read_router_key(path)
    assert "llmctl up" in (missing.value.hint or "")
    assert ensure_router_key(path) is True
    key = read_router_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 40
    assert ensure_router_key(path) is False
    assert read_router_key(path) == key
    path.chmod(0o640)
    with pytest.raises(LlmctlError, match="readable by others"):
        ensure_router_key(path)
    path.chmod(0o600)
    path.write_text("# emptied by hand\n")
    with pytest.raises(LlmctlError, match="no LLMCTL_ROUTER_KEY"):
        ensure_router_key(path)
