"""gateway.yaml: gateway.litellm merged beside llmctl's own settings, filtered to what is routed;
LiteLLM's own metrics (gateway.litellm_metrics) as its prometheus callback."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.render.gateway import merge_settings, render_gateway_config, routed_models
from tests.conftest import dump, minimal_config

SERVING = {"llama": "tiny"}


def config_with(passthrough: dict[str, Any]) -> Config:
    config = minimal_config()
    # "other" is a model of the llama backend, which serves "tiny": it is not routed now.
    config["models"]["other"] = {"backend": "llama", "source": "/models/other.gguf"}
    config["models"]["cloud"] = {
        "remote": {"provider": "openai", "model": "gpt-4o", "api_key_env": "OPENAI_KEY"}
    }
    config["gateway"]["litellm"] = passthrough
    config["gateway"]["litellm_metrics"] = True  # llmctl's own callback, for the merges below
    parsed, _ = parse_config(dump(config))
    return parsed


def rendered(passthrough: dict[str, Any]) -> dict[str, Any]:
    config = config_with(passthrough)
    assert routed_models(config, SERVING) == ["cloud", "tiny"]
    data: dict[str, Any] = yaml.safe_load(render_gateway_config(config, SERVING))
    return data


def test_without_a_passthrough_the_file_is_what_llmctl_writes() -> None:
    plain = rendered({})
    assert plain == rendered({"router_settings": {}, "litellm_settings": {}, "general_settings": {}})
    assert plain["litellm_settings"] == {
        "drop_params": True,
        "request_timeout": 600,
        "callbacks": ["prometheus"],
    }
    assert plain["general_settings"]["background_health_checks"] is False


def test_each_section_is_merged_beside_llmctls_keys() -> None:
    data = rendered(
        {
            "router_settings": {"stream_timeout": 30, "retry_policy": {"TimeoutErrorRetries": 1}},
            "litellm_settings": {"set_verbose": True, "callbacks": ["langfuse"]},
            "general_settings": {"health_check_interval": 300, "max_parallel_requests": 8},
        }
    )
    router = data["router_settings"]
    assert router["routing_strategy"] == "simple-shuffle" and router["num_retries"] == 2
    assert router["stream_timeout"] == 30 and router["retry_policy"] == {"TimeoutErrorRetries": 1}
    assert data["litellm_settings"] == {
        "drop_params": True,
        "request_timeout": 600,
        "set_verbose": True,
        # gateway.litellm_metrics' callback first, the passthrough's joined after it.
        "callbacks": ["prometheus", "langfuse"],
    }
    general = data["general_settings"]
    assert general["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert general["custom_auth"] == "llmctl_gateway_auth.user_api_key_auth"
    assert general["health_check_interval"] == 300 and general["max_parallel_requests"] == 8
    # Unset keys are not written as nulls: LiteLLM would read null as a value.
    assert None not in router.values() and "retry_after" not in router


def test_the_two_llmctl_defaults_a_passthrough_may_set_win() -> None:
    data = rendered(
        {"litellm_settings": {"drop_params": False}, "general_settings": {"background_health_checks": True}}
    )
    assert data["litellm_settings"]["drop_params"] is False
    assert data["general_settings"]["background_health_checks"] is True


def test_fallback_maps_and_model_policies_are_filtered_to_the_routed_models() -> None:
    data = rendered(
        {
            "router_settings": {
                "context_window_fallbacks": [{"tiny": ["other", "cloud"]}, {"other": ["cloud"]}],
                "content_policy_fallbacks": [{"cloud": ["other"]}],
                "default_fallbacks": ["other", "cloud"],
                "model_group_retry_policy": {"other": {"DefaultRetries": 1}, "cloud": {"DefaultRetries": 3}},
            }
        }
    )
    router = data["router_settings"]
    # "other" is not routed: it leaves every list, and a source with no target left goes too.
    assert router["context_window_fallbacks"] == [{"tiny": ["cloud"]}]
    assert "content_policy_fallbacks" not in router
    assert router["default_fallbacks"] == ["cloud"]
    assert router["model_group_retry_policy"] == {"cloud": {"DefaultRetries": 3}}


def test_when_the_backend_serves_the_other_model_its_entries_are_routed() -> None:
    config = config_with({"router_settings": {"context_window_fallbacks": [{"other": ["cloud"]}]}})
    data = yaml.safe_load(render_gateway_config(config, {"llama": "other"}))
    assert data["router_settings"]["context_window_fallbacks"] == [{"other": ["cloud"]}]


def test_references_stay_references() -> None:
    params = {"s3_bucket_name": "logs", "s3_aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY"}
    text = render_gateway_config(config_with({"litellm_settings": {"s3_callback_params": params}}), SERVING)
    assert "s3_aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY" in text


def test_lists_in_both_are_joined_and_other_keys_of_the_passthrough_win() -> None:
    ours = {"callbacks": ["llmctl_hook"], "drop_params": True, "request_timeout": 600}
    passed = {"callbacks": ["langfuse", "llmctl_hook"], "drop_params": False, "json_logs": True}
    assert merge_settings(ours, passed) == {
        "callbacks": ["llmctl_hook", "langfuse"],
        "drop_params": False,
        "request_timeout": 600,
        "json_logs": True,
    }


def with_metrics(**gateway: Any) -> dict[str, Any]:
    config, _ = parse_config(
        dump(minimal_config(gateway={"command": "/opt/litellm/bin/litellm", "port": 4000, **gateway}))
    )
    out: dict[str, Any] = yaml.safe_load(render_gateway_config(config, SERVING))
    return out


def test_litellm_metrics_are_off_by_default() -> None:
    # On by default, `up` would refuse every config whose LiteLLM lacks prometheus_client.
    assert "callbacks" not in with_metrics()["litellm_settings"]


def test_litellm_metrics_render_as_the_prometheus_callback() -> None:
    settings = with_metrics(litellm_metrics=True)["litellm_settings"]
    assert settings["callbacks"] == ["prometheus"]
    # /metrics keeps LiteLLM's default, auth on: nothing here may turn it off.
    assert "require_auth_for_metrics_endpoint" not in settings


def test_litellm_metrics_off_renders_no_callback() -> None:
    settings = with_metrics(litellm_metrics=False)["litellm_settings"]
    assert "callbacks" not in settings
    assert settings["drop_params"] is True
    passed = with_metrics(litellm_metrics=False, litellm={"litellm_settings": {"callbacks": ["langfuse"]}})
    assert passed["litellm_settings"]["callbacks"] == ["langfuse"]


def test_litellm_metrics_must_be_a_boolean() -> None:
    with pytest.raises(LlmctlError) as info:
        parse_config(dump(minimal_config(gateway={"command": "/x/litellm", "litellm_metrics": "sometimes"})))
    assert "gateway.litellm_metrics" in str(info.value.message) + "".join(info.value.details)
