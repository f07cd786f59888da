"""gateway.cache rendered: llmctl-redis.service, redis.conf and what gateway.yaml and the
gateway's unit say about it (golden files), with the password in none of them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.config.cache import GatewayCache
from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.paths import Paths
from llmctl.render.redis_conf import cache_params, redis_word, render_redis_conf
from llmctl.render.units import RenderOptions, render_stack
from llmctl.secrets import ensure_redis_password, read_redis_password
from tests import systemd_syntax
from tests.conftest import dump, minimal_config
from tests.render.test_units import REPO, _fake_executable, fixed_options

GOLDEN = REPO / "tests" / "golden" / "cache"


def cached_config(**cache: Any) -> Config:
    config = minimal_config()
    config["gateway"]["cache"] = {"type": "redis", "command": "/usr/bin/redis-server", **cache}
    parsed, _ = parse_config(dump(config))
    return parsed


def files(config: Config | None = None) -> dict[str, str]:
    config = config or cached_config(ttl="10m")
    return render_stack(config, fixed_options(Path("/home/user/.config/llmctl/llmctl.yaml"))).files


def unit(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, key, value in systemd_syntax.parse_unit(text):
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def test_golden_files_of_a_stack_with_a_cache() -> None:
    rendered = files()
    if os.environ.get("LLMCTL_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, text in rendered.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
    expected = {str(p.relative_to(GOLDEN)): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(rendered) == sorted(expected), "every expected file, and no other"
    for rel, text in rendered.items():
        assert text == expected[rel], f"{rel} differs from its golden file (LLMCTL_UPDATE_GOLDEN=1 rewrites)"


def test_redis_runs_as_a_notify_unit_on_its_rendered_config() -> None:
    redis = unit(files()["systemd/user/llmctl-redis.service"])
    assert redis["Service.Type"] == ["notify"] and redis["Service.NotifyAccess"] == ["main"]
    assert systemd_syntax.exec_argv(redis["Service.ExecStart"][0]) == [
        "/usr/bin/redis-server", "/home/user/.config/llmctl/redis.conf",
    ]  # fmt: skip
    assert redis["Service.UMask"] == ["0077"] and redis["Service.Restart"] == ["on-failure"]
    assert redis["Unit.PartOf"] == ["llmctl.target"] and redis["Install.WantedBy"] == ["llmctl.target"]
    assert "Service.EnvironmentFile" not in redis  # the password reaches it through redis.conf only


def test_the_gateway_wants_redis_reads_its_password_and_recovers_quickly() -> None:
    gateway = unit(files()["systemd/user/llmctl-gateway.service"])
    assert gateway["Unit.Wants"] == ["llmctl-redis.service"]  # not Requires=: a dead cache is skipped
    assert "Unit.Requires" in gateway and "llmctl-redis.service" not in gateway["Unit.Requires"][0]
    assert gateway["Unit.After"] == ["llmctl-gateway.socket llmctl-redis.service"]
    assert "-/home/user/.config/llmctl/redis.env" in gateway["Service.EnvironmentFile"]
    env = systemd_syntax.environment(gateway["Service.Environment"])
    assert env["REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"] == "5"
    target = unit(files()["systemd/user/llmctl.target"])
    assert "llmctl-redis.service" in target["Unit.Wants"][0].split()


def test_without_a_cache_nothing_mentions_redis() -> None:
    parsed, _ = parse_config(dump(minimal_config()))
    rendered = files(parsed)
    assert not [rel for rel in rendered if "redis" in rel]
    assert not [rel for rel, text in rendered.items() if "redis" in text.lower()]


def test_gateway_yaml_turns_litellms_cache_on_with_the_password_by_name() -> None:
    gateway = yaml.safe_load(files(cached_config(ttl="10m", namespace="llmctl"))["llmctl/gateway.yaml"])
    settings = gateway["litellm_settings"]
    assert settings["cache"] is True
    assert settings["cache_params"] == {
        "type": "redis", "host": "127.0.0.1", "port": 6380,
        "password": "os.environ/LLMCTL_REDIS_PASSWORD",
        "ttl": 600, "mode": "default_on",
        "socket_timeout": 0.5, "socket_connect_timeout": 0.5,
        "namespace": "llmctl",
    }  # fmt: skip


def test_a_fractional_ttl_stays_fractional() -> None:
    assert cache_params(GatewayCache(type="redis", ttl=1.5))["ttl"] == 1.5


def test_redis_conf_binds_loopback_protects_and_includes_the_password(paths: Paths) -> None:
    text = render_redis_conf(GatewayCache(type="redis", port=6390, maxmemory="1gb"), paths, "/c.yaml")
    directives = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert directives == [
        "bind 127.0.0.1 -::1",
        "port 6390",
        "protected-mode yes",
        "daemonize no",
        "supervised systemd",
        'logfile ""',
        f"dir {paths.state_dir}/redis",
        "dbfilename cache.rdb",
        "save 3600 1 300 100 60 10000",
        "appendonly no",
        "maxmemory 1gb",
        "maxmemory-policy allkeys-lru",
        f"include {paths.config_home}/llmctl/redis-auth.conf",
    ]
    assert "requirepass" not in text.replace("`requirepass`", "")


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("/home/u/.config/llmctl/redis-auth.conf", "/home/u/.config/llmctl/redis-auth.conf"),
        ("/home/my user/state", '"/home/my user/state"'),
        ('/home/a"b\\c', '"/home/a\\"b\\\\c"'),
        ("/home/$x#y", '"/home/$x#y"'),
    ],
)
def test_paths_are_quoted_the_way_redis_splits_them(value: str, word: str) -> None:
    assert redis_word(value, "here") == word


def test_a_control_character_in_a_path_is_a_clear_error() -> None:
    with pytest.raises(LlmctlError, match="holds a control character"):
        redis_word("/home/a\nrequirepass x", "redis data dir")


def test_the_password_is_in_no_rendered_file(paths: Paths, tmp_path: Path) -> None:
    ensure_redis_password(paths.redis_env_file, paths.redis_auth_file)
    password = read_redis_password(paths.redis_env_file)
    parsed = cached_config()
    rendered = render_stack(parsed, RenderOptions(config_path=tmp_path / "c.yaml", paths=paths,
                                                  resolve=lambda c: Path("/usr/bin") / Path(c).name))  # fmt: skip
    assert rendered.units.index("llmctl-redis.service") < rendered.units.index("llmctl-gateway.service")
    for rel, text in rendered.files.items():
        assert password not in text, rel


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_units_pass_systemd_analyze_verify_silently(tmp_path: Path, paths: Paths) -> None:
    config = minimal_config()
    config["backends"]["llama"]["command"] = _fake_executable(tmp_path / "bin" / "llama-server")
    config["gateway"]["command"] = _fake_executable(tmp_path / "bin" / "litellm")
    config["gateway"]["cache"] = {
        "type": "redis",
        "command": _fake_executable(tmp_path / "bin" / "redis-server"),
    }
    parsed, _ = parse_config(dump(config))
    stack = render_stack(parsed, RenderOptions(config_path=tmp_path / "llmctl.yaml", paths=paths))
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
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0
    assert (unit_dir / "llmctl-redis.service").exists()
