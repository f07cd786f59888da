"""gateway.litellm: what it accepts, and every refusal naming the key and what to use instead."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmctl.config.litellm_settings import (
    GeneralSettings,
    LitellmSettings,
    PassthroughSection,
    RouterSettings,
)
from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.errors import ConfigError, ExitCode
from tests.conftest import dump, minimal_config

SECTIONS: dict[str, type[PassthroughSection]] = {
    "router_settings": RouterSettings,
    "litellm_settings": LitellmSettings,
    "general_settings": GeneralSettings,
}
FAKE_KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2


def config_with(passthrough: dict[str, Any], **gateway: Any) -> dict[str, Any]:
    config = minimal_config()
    config["models"]["cloud"] = {"remote": {"provider": "openai", "model": "gpt-4o"}}
    config["gateway"].update(gateway, litellm=passthrough)
    return config


def load(passthrough: dict[str, Any], **gateway: Any) -> Config:
    config, _ = parse_config(dump(config_with(passthrough, **gateway)), "test.yaml")
    return config


def problems(passthrough: dict[str, Any], **gateway: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(passthrough, **gateway)
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.details


def test_a_tuned_config_is_accepted_in_litellms_own_shape() -> None:
    config = load(
        {
            "router_settings": {
                "context_window_fallbacks": [{"tiny": ["cloud"]}],
                "content_policy_fallbacks": [{"cloud": ["tiny"]}],
                "default_fallbacks": ["cloud"],
                "retry_policy": {"TimeoutErrorRetries": 1, "RateLimitErrorRetries": 4},
                "model_group_retry_policy": {"cloud": {"DefaultRetries": 0}},
                "allowed_fails_policy": {"RateLimitErrorAllowedFails": 100},
                "stream_timeout": 30,
                "routing_strategy_args": {"ttl": 60},
            },
            "litellm_settings": {
                "set_verbose": False,
                "json_logs": True,
                "callbacks": ["langfuse", "custom_callbacks.handler"],
                "s3_callback_params": {
                    "s3_bucket_name": "logs",
                    "s3_aws_access_key_id": "os.environ/AWS_ACCESS_KEY_ID",
                    "s3_aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY",
                },
            },
            "general_settings": {"background_health_checks": True, "health_check_interval": 300},
        }
    )
    sections = config.gateway.litellm.sections()
    assert sections["router_settings"]["stream_timeout"] == 30.0
    assert sections["router_settings"]["retry_policy"] == {
        "TimeoutErrorRetries": 1,
        "RateLimitErrorRetries": 4,
    }
    assert sections["litellm_settings"]["callbacks"] == ["langfuse", "custom_callbacks.handler"]
    assert sections["general_settings"] == {"background_health_checks": True, "health_check_interval": 300}
    assert config.gateway.litellm.is_set()


def test_no_passthrough_is_no_passthrough() -> None:
    config, _ = parse_config(dump(minimal_config()))
    assert not config.gateway.litellm.is_set()
    assert not load({"router_settings": {}, "litellm_settings": {}}).gateway.litellm.is_set()


REFUSALS = [(section, key, why) for section, cls in SECTIONS.items() for key, why in cls.REFUSED.items()]


@pytest.mark.parametrize(("section", "key", "why"), REFUSALS, ids=[f"{s}.{k}" for s, k, _ in REFUSALS])
def test_each_key_llmctl_owns_is_refused_with_what_to_use(section: str, key: str, why: str) -> None:
    # A plausible value of the right shape: the refusal is about the key, never the value.
    [message] = problems({section: {key: "os.environ/SOME_VALUE"}})
    assert message.startswith(f"gateway.litellm.{section}.{key} (line "), message
    assert f"{key} is llmctl's: {why}" in message
    # Each reason names the llmctl key (gateway.*, models:) or what llmctl does instead.
    assert re.search(r"gateway\.[a-z_]+|models:|llmctl (generates|runs|sets)|llmctl's own|auth hook", why), (
        why
    )


@pytest.mark.parametrize(
    ("section", "key", "instead"),
    [
        ("router_settings", "routing_strategy", "gateway.routing_strategy"),
        ("router_settings", "fallbacks", "gateway.fallbacks"),
        ("router_settings", "num_retries", "gateway.num_retries"),
        ("router_settings", "timeout", "gateway.timeout"),
        ("router_settings", "cooldown_time", "gateway.cooldown_time"),
        ("router_settings", "allowed_fails", "gateway.allowed_fails"),
        ("router_settings", "disable_cooldowns", "gateway.on_demand"),
        ("router_settings", "redis_host", "gateway.cache"),
        ("router_settings", "redis_port", "gateway.cache"),
        ("router_settings", "redis_password", "gateway.cache"),
        ("router_settings", "redis_url", "gateway.cache"),
        ("router_settings", "model_list", "models:"),
        ("litellm_settings", "request_timeout", "gateway.timeout"),
        ("litellm_settings", "num_retries", "gateway.num_retries"),
        ("litellm_settings", "cache", "gateway.cache"),
        ("litellm_settings", "cache_params", "gateway.cache"),
        ("general_settings", "master_key", "llmctl gateway key"),
        ("general_settings", "database_url", "without a database"),
        ("general_settings", "custom_auth", "auth hook"),
        ("general_settings", "port", "gateway.port"),
    ],
)
def test_the_refusals_the_issue_names(section: str, key: str, instead: str) -> None:
    [message] = problems({section: {key: 1}})
    assert key in message and instead in message, message


MISPLACED = [
    (section, key, where) for section, cls in SECTIONS.items() for key, where in cls.MISPLACED.items()
]


@pytest.mark.parametrize(("section", "key", "where"), MISPLACED, ids=[f"{s}.{k}" for s, k, _ in MISPLACED])
def test_a_key_in_the_wrong_section_is_sent_to_the_right_one(section: str, key: str, where: str) -> None:
    [message] = problems({section: {key: 1}})
    assert f"{key} is read from {where}: use gateway.litellm.{where}.{key}" in message
    # ...and the right one takes it (or refuses it as llmctl's, never as unknown).
    target = SECTIONS[where]
    assert key in target.model_fields or key in target.REFUSED


def test_several_owned_keys_are_all_named() -> None:
    [message] = problems({"router_settings": {"fallbacks": [], "num_retries": 3}})
    text = dump(config_with({"router_settings": {"fallbacks": [], "num_retries": 3}}))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "fallbacks: []" in row)
    assert message.startswith(f"gateway.litellm.router_settings.fallbacks (line {line}): ")
    assert "fallbacks is llmctl's: use gateway.fallbacks" in message
    assert "num_retries is llmctl's: use gateway.num_retries" in message


@pytest.mark.parametrize("field", ["callbacks", "success_callback", "failure_callback"])
def test_prometheus_callbacks_go_to_gateway_litellm_metrics(field: str) -> None:
    [message] = problems({"litellm_settings": {field: ["langfuse", "prometheus"]}})
    assert f"gateway.litellm.litellm_settings.{field}" in message
    assert "prometheus is llmctl's: use gateway.litellm_metrics" in message


def test_an_unknown_key_gets_a_did_you_mean() -> None:
    [message] = problems({"router_settings": {"stream_timout": 30}})
    assert message.startswith("gateway.litellm.router_settings.stream_timout (line ")
    assert message.endswith("unknown key; did you mean 'stream_timeout'?")
    [message] = problems({"router_setings": {}})
    assert "did you mean 'router_settings'?" in message


def test_an_unknown_key_without_a_close_one_lists_the_accepted_keys() -> None:
    [message] = problems({"general_settings": {"zzz": 1}})
    assert "unknown key; allowed: " in message
    assert all(key in message for key in GeneralSettings.model_fields)


def test_values_are_typed() -> None:
    found = problems(
        {
            "router_settings": {"stream_timeout": "30", "retry_policy": {"TimeoutErrorRetries": -1}},
            "litellm_settings": {"callbacks": "langfuse"},
        }
    )
    assert any("router_settings.stream_timeout" in p for p in found), found
    assert any(
        "retry_policy.TimeoutErrorRetries" in p and "greater than or equal to 0" in p for p in found
    ), found
    assert any("litellm_settings.callbacks" in p for p in found), found


def test_a_fallback_map_item_maps_one_model() -> None:
    [message] = problems(
        {"router_settings": {"context_window_fallbacks": [{"tiny": ["cloud"], "cloud": []}]}}
    )
    assert "context_window_fallbacks" in message and "exactly one model" in message


# --- secrets ---------------------------------------------------------------------------------


def test_a_secret_field_takes_only_a_reference_and_the_secret_is_never_echoed() -> None:
    params = {"s3_bucket_name": "logs", "s3_aws_secret_access_key": "hunter2-not-a-reference"}
    [message] = problems({"litellm_settings": {"s3_callback_params": params}})
    # At the key's own line, as every other problem.
    text = dump(config_with({"litellm_settings": {"s3_callback_params": params}}))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "s3_aws_secret_access_key" in row)
    where = "gateway.litellm.litellm_settings.s3_callback_params.s3_aws_secret_access_key"
    assert message.startswith(f"{where} (line {line}): ")
    assert "secrets.env" in message and "os.environ/NAME" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("name", ["LITELLM_MASTER_KEY", "LLMCTL_API_KEY_NATIVE"])
def test_a_reference_to_llmctls_own_keys_is_refused(name: str) -> None:
    params = {"s3_bucket_name": "logs", "s3_aws_secret_access_key": f"os.environ/{name}"}
    [message] = problems({"litellm_settings": {"s3_callback_params": params}})
    assert "s3_aws_secret_access_key" in message and "llmctl" in message


def test_a_reference_is_written_as_a_reference() -> None:
    params = {"s3_bucket_name": "logs", "s3_aws_session_token": "os.environ/AWS_SESSION_TOKEN"}
    config = load({"litellm_settings": {"s3_callback_params": params}})
    dumped = config.gateway.litellm.sections()["litellm_settings"]["s3_callback_params"]
    assert dumped["s3_aws_session_token"] == "os.environ/AWS_SESSION_TOKEN"


def test_a_secret_under_an_unknown_secret_name_is_refused_as_a_secret() -> None:
    [message] = problems({"litellm_settings": {"langfuse_secret_key": FAKE_KEY}})
    assert "litellm_settings.langfuse_secret_key" in message and "secrets.env" in message
    assert FAKE_KEY not in message


@pytest.mark.parametrize(
    "passthrough",
    [
        {"litellm_settings": {"callbacks": [FAKE_KEY]}},
        {"router_settings": {"default_fallbacks": [FAKE_KEY]}},
        {"router_settings": {"model_group_retry_policy": {FAKE_KEY[:30]: {}}}},
    ],
)
def test_a_value_that_looks_like_a_key_is_refused_by_place(passthrough: dict[str, Any]) -> None:
    found = problems(passthrough)
    joined = " ".join(found)
    assert "looks like a key" in joined or "secrets.env" in joined, found
    assert FAKE_KEY not in joined and FAKE_KEY[:30] not in joined


# --- across the config -----------------------------------------------------------------------


def test_model_ids_must_be_in_models() -> None:
    found = problems(
        {
            "router_settings": {
                "context_window_fallbacks": [{"tiny": ["clowd"]}],
                "content_policy_fallbacks": [{"nope": ["cloud"]}],
                "default_fallbacks": ["tinny"],
                "model_group_retry_policy": {"other": {"DefaultRetries": 1}},
            }
        }
    )
    assert any(
        p.startswith("gateway.litellm.router_settings.context_window_fallbacks[0].tiny[0] (line ")
        and "unknown model 'clowd' (not in models:); did you mean 'cloud'?" in p
        for p in found
    ), found
    assert any("content_policy_fallbacks[0].nope" in p and "unknown model 'nope'" in p for p in found)
    assert any("default_fallbacks[0]" in p and "did you mean 'tiny'?" in p for p in found)
    assert any("model_group_retry_policy.other" in p and "unknown model 'other'" in p for p in found)


def test_a_model_cannot_fall_back_to_itself() -> None:
    [message] = problems({"router_settings": {"context_window_fallbacks": [{"tiny": ["cloud", "tiny"]}]}})
    assert "context_window_fallbacks[0].tiny" in message and "itself" in message


def test_background_health_checks_are_refused_with_on_demand() -> None:
    passthrough = {"general_settings": {"background_health_checks": True}}
    assert load(passthrough).gateway.litellm.general_settings is not None
    [message] = problems(passthrough, on_demand=True)
    assert "general_settings.background_health_checks" in message and "gateway.on_demand" in message
