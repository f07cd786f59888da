"""The list of managed units: order, selection by name, what each routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config.load import parse_config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from llmctl.stack import select, stack_from_installed, stack_units
from tests.conftest import dump, minimal_config


def config_with_two() -> dict[str, object]:
    config = minimal_config()
    config["backends"]["ollama"] = {"kind": "ollama", "command": "/usr/bin/ollama", "port": 11434}
    config["models"]["llama3"] = {"backend": "ollama", "source": "llama3:8b"}
    config["models"]["idle"] = {"backend": "llama", "source": "/m/idle.gguf"}
    return config


def test_backends_then_gateway_and_what_each_serves() -> None:
    config, _ = parse_config(dump(config_with_two()))
    units = stack_units(config)
    assert [u.unit for u in units] == [
        "llmctl-llama.service",
        "llmctl-ollama.service",
        "llmctl-gateway.service",
        "llmctl-supervisor.service",
    ]
    llama, ollama, gateway, _supervisor = units
    assert (llama.model, llama.models, llama.url) == ("tiny", ("tiny",), "http://127.0.0.1:8080")
    assert ollama.model is None and ollama.models == ("llama3",)
    # The gateway routes what is served now: not the idle model of the llama backend.
    assert gateway.models == ("llama3", "tiny")
    assert stack_units(config, {"llama": "idle"})[-2].models == ("idle", "llama3")


def test_select_by_name_or_unit_keeps_stack_order() -> None:
    config, _ = parse_config(dump(config_with_two()))
    units = stack_units(config)
    assert [u.name for u in select(units, ("gateway", "llama"))] == ["llama", "gateway"]
    assert [u.name for u in select(units, ("llmctl-ollama.service",))] == ["ollama"]


def test_select_unknown_name_suggests() -> None:
    config, _ = parse_config(dump(config_with_two()))
    with pytest.raises(LlmctlError, match="no backend or gateway named 'lama'") as info:
        select(stack_units(config), ("lama",))
    assert info.value.exit_code == ExitCode.USAGE and "did you mean 'llama'" in (info.value.hint or "")


def test_the_caches_redis_starts_before_the_gateway_and_is_found_in_the_installed_units(
    tmp_path: Path,
) -> None:
    config = minimal_config()
    config["gateway"]["cache"] = {"type": "redis", "port": 6390, "command": "/usr/bin/redis-server"}
    parsed, _ = parse_config(dump(config))
    units = stack_units(parsed)
    assert [u.unit for u in units] == [
        "llmctl-llama.service", "llmctl-redis.service", "llmctl-gateway.service", "llmctl-supervisor.service",
    ]  # fmt: skip
    redis = units[1]
    assert (redis.name, redis.kind, redis.host, redis.port, redis.command) == (
        "redis", "redis", "127.0.0.1", 6390, "/usr/bin/redis-server",
    )  # fmt: skip
    assert not redis.ready_when_active and not redis.is_gateway  # probed, and started with the backends
    assert select(units, ("redis",)) == [redis]
    for rel, text in render_stack(
        parsed, RenderOptions(tmp_path / "c.yaml", Paths.from_env(), resolve=Path)
    ).files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    installed = stack_from_installed(tmp_path)
    assert [(u.unit, u.kind, u.port) for u in installed if u.kind == "redis"] == [
        ("llmctl-redis.service", "redis", 6390)
    ]
    assert [u.unit for u in installed][:3] == [
        "llmctl-llama.service",
        "llmctl-redis.service",
        "llmctl-gateway.service",
    ]
