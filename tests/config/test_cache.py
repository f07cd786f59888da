"""gateway.cache: strict, with defaults that keep Redis on loopback and clear of a system Redis;
a password is refused (llmctl generates it), and so is anything a Redis config cannot carry."""

from __future__ import annotations

from typing import Any

import pytest

from llmctl.config.cache import GatewayCache
from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from tests.config.test_load import problems
from tests.conftest import dump, minimal_config


def with_cache(**cache: Any) -> dict[str, Any]:
    config = minimal_config()
    config["gateway"]["cache"] = {"type": "redis", **cache}
    return config


def parsed(config: dict[str, Any]) -> Config:
    result, _ = parse_config(dump(config))
    return result


def test_defaults() -> None:
    cache = parsed(with_cache()).gateway.cache
    assert cache == GatewayCache(type="redis")
    assert (cache.port, cache.command, cache.ttl, cache.mode, cache.namespace) == (
        6380, "redis-server", 3600.0, "default_on", None,
    )  # fmt: skip
    assert (cache.maxmemory, cache.timeout) == ("256mb", 0.5)


def test_no_cache_is_the_default() -> None:
    assert parsed(minimal_config()).gateway.cache is None


def test_ttl_takes_durations() -> None:
    assert parsed(with_cache(ttl="10m")).gateway.cache.ttl == 600.0  # type: ignore[union-attr]
    assert parsed(with_cache(ttl=90)).gateway.cache.ttl == 90.0  # type: ignore[union-attr]


@pytest.mark.parametrize("key", ["password", "requirepass"])
def test_a_password_is_refused_without_echoing_it(key: str) -> None:
    [message] = problems(with_cache(**{key: "hunter2-hunter2"}))
    assert message.startswith("gateway.cache (line ")
    assert "takes no password: llmctl generates one into a file of mode 0600" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("cache", "where"),
    [
        ({"type": "memcached"}, "gateway.cache.type"),
        ({"type": "redis", "port": 0}, "gateway.cache.port"),
        ({"type": "redis", "port": "6380"}, "gateway.cache.port"),  # strict: no coercion
        ({"type": "redis", "maxmemory": "lots"}, "gateway.cache.maxmemory"),
        ({"type": "redis", "maxmemory": "256mb\nrequirepass x"}, "gateway.cache.maxmemory"),
        ({"type": "redis", "namespace": "has space"}, "gateway.cache.namespace"),
        ({"type": "redis", "mode": "always"}, "gateway.cache.mode"),
        ({"type": "redis", "timeout": 0}, "gateway.cache.timeout"),
        ({"type": "redis", "ttl": "forever"}, "gateway.cache.ttl"),
        ({"type": "redis", "command": "redis\nserver"}, "gateway.cache.command"),
        ({"type": "redis", "host": "0.0.0.0"}, "gateway.cache.host"),  # loopback only, no key
        ({"port": 6380}, "gateway.cache.type"),
    ],
)
def test_bad_values_are_refused_with_their_path(cache: dict[str, Any], where: str) -> None:
    config = minimal_config()
    config["gateway"]["cache"] = cache
    found = problems(config)
    assert any(p.startswith((f"{where} (line ", f"{where}: ")) for p in found), found


def test_its_port_must_not_clash_with_another_listener() -> None:
    found = problems(with_cache(port=4000))
    assert any(p.startswith("gateway.cache.port") and "also used by gateway" in p for p in found), found


def test_redis_is_a_reserved_backend_name() -> None:
    config = minimal_config()
    config["backends"]["redis"] = {**config["backends"]["llama"], "port": 8081}
    found = problems(config)
    assert any(p.startswith("backends.redis") and "'redis' is reserved" in p for p in found), found


def test_a_cache_without_the_gateway_is_a_warning() -> None:
    config = with_cache()
    config["gateway"]["enabled"] = False
    _, warnings = parse_config(dump(config))
    assert [w.describe() for w in warnings if w.loc[:2] == ("gateway", "cache")] == [
        "gateway.cache: has no effect: the gateway is disabled"
    ]


def test_a_missing_redis_server_is_a_warning_naming_the_package() -> None:
    _, warnings = parse_config(dump(with_cache(command="/nonexistent/redis-server")))
    [warning] = [w for w in warnings if w.loc == ("gateway", "cache", "command")]
    assert "apt-get install redis-server" in warning.describe()
