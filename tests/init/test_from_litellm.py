"""init --from-litellm, the import itself: models, backends, keys, fallbacks, settings, report."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from llmctl.config.load import parse_config
from llmctl.init.from_litellm import Served, render_import
from llmctl.init.litellm_source import holds_secret_literal
from tests.init.litellm_fixtures import (
    CLAUDE_KEY,
    GROQ_KEY,
    MASTER_KEY,
    MATCHING_GGUF,
    SERVED_GGUF,
    detection,
    outcome,
    run,
    workstation,
)


def entry(name: str, model: str, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": model, **params}}


def source(*entries: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"model_list": list(entries), **sections}


def test_the_workstation_imports_into_a_config_that_loads() -> None:
    result = run()
    text = render_import(result)
    config, _warnings = parse_config(text)
    assert set(config.models) == {
        "llama3.1:latest",
        "gpt-oss:20b-cloud",
        "llama-cpp-default",
        "llama-cpp-native",
        "qwen-coder-vllm",
        "gpt-4o",
        "claude-sonnet",
        "azure-gpt-4o",
        "groq-llama",
        "deepseek-chat",
    }
    assert {n: (b.kind, b.port) for n, b in config.backends.items()} == {
        "ollama": ("ollama", 11434),
        "llama-cpp": ("llama-cpp-python", 8000),
        "llama-server": ("llama-server", 8080),
        "vllm": ("vllm", 8001),
    }
    assert config.backends["llama-server"].command == "/usr/local/bin/llama-server"
    assert config.backends["llama-cpp"].model == "llama-cpp-default"  # type: ignore[union-attr]
    assert config.models["llama-cpp-default"].source == SERVED_GGUF
    assert config.models["llama-cpp-native"].source == str(MATCHING_GGUF)
    assert config.models["qwen-coder-vllm"].source == "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"
    assert config.models["gpt-oss:20b-cloud"].source == "gpt-oss:20b-cloud"
    assert config.gateway.command == "/home/user/venvs/litellm/bin/litellm"
    assert config.gateway.on_demand is False


def test_each_outcome_with_why() -> None:
    result = run()
    # Mapped: the server on 8000 said which GGUF it serves.
    assert outcome(result, "model_list[2]") == (
        "mapped",
        "the server on port 8000 says it is llama-cpp-python; the server on port 8000 serves " + SERVED_GGUF,
    )
    # Guessed: nothing answered on 8080; the one GGUF here whose name matches.
    state, why = outcome(result, "model_list[3]")
    assert state == "guessed" and f"{MATCHING_GGUF}: the one GGUF found here whose name matches" in why
    # Unmapped: Bedrock needs AWS keys and a region that llmctl's remote models do not carry.
    state, why = outcome(result, "model_list[10]")
    assert state == "unmapped"
    assert "aws_access_key_id, aws_region_name, aws_secret_access_key" in why
    assert "bedrock-claude" not in result.config["models"]
    # A vLLM entry is a guess when no vLLM answered: its served name may not be the repo id.
    assert outcome(result, "model_list[4]")[0] == "guessed"
    # Ollama: pulled or not, and llmctl routes it as ollama_chat/.
    state, why = outcome(result, "model_list[0]")
    assert state == "mapped" and "pulled here" in why and "routed as ollama_chat/" in why
    assert "not pulled here yet (ollama pull gpt-oss:20b-cloud)" in outcome(result, "model_list[1]")[1]
    # Tuning that llmctl has no place for is named, not silently dropped.
    assert "not carried: rpm" in outcome(result, "model_list[5]")[1]
    # No vllm executable here: the backend's command is a guess, and says so.
    state, why = outcome(result, "backend vllm")
    assert state == "guessed" and "no vllm found on this machine" in why


def test_keys_literal_moved_environment_kept() -> None:
    result = run()
    models = result.config["models"]
    assert models["gpt-4o"]["remote"]["api_key_env"] == "OPENAI_API_KEY"
    assert models["azure-gpt-4o"]["remote"] == {
        "provider": "azure",
        "model": "gpt-4o-prod",
        "api_base": "https://contoso.openai.azure.com/",
        "api_version": "2024-10-21",
        "api_key_env": "AZURE_API_KEY",
    }
    assert models["deepseek-chat"]["remote"]["model"] == "deepseek/deepseek-chat"
    # The literal key: into secrets under a generated name; the config names it.
    assert models["claude-sonnet"]["remote"]["api_key_env"] == "ANTHROPIC_API_KEY"
    # environment_variables move too (the gateway's environment is secrets.env).
    assert result.secrets == {"ANTHROPIC_API_KEY": CLAUDE_KEY, "GROQ_API_KEY": GROQ_KEY}
    assert result.needed == ["AZURE_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"]
    # No literal anywhere but in result.secrets: not the config, the report, or as_dict.
    shown = render_import(result) + json.dumps(result.as_dict()) + repr(result)
    for literal in (CLAUDE_KEY, GROQ_KEY, MASTER_KEY):
        assert literal not in shown
    assert result.as_dict()["secrets_moved"] == ["ANTHROPIC_API_KEY", "GROQ_API_KEY"]
    assert outcome(result, "general_settings.master_key")[0] == "unmapped"


def test_generated_key_names_avoid_every_name_in_use_and_reuse_known_values() -> None:
    data = source(
        entry("a", "openai/gpt-4o", api_key="sk-one-0123456789"),
        entry("b", "openai/gpt-4o-mini", api_key="sk-one-0123456789"),
        entry("c", "openai/o3", api_key="sk-two-0123456789"),
        entry("d", "openai/o1", api_key="os.environ/OPENAI_API_KEY_2"),
        entry("e", "anthropic/claude-3-haiku", api_key="sk-three-0123456789"),
    )
    result = run(data, existing={"OPENAI_API_KEY": "sk-already-there", "MINE": "sk-three-0123456789"})
    names = {m: v["remote"].get("api_key_env") for m, v in result.config["models"].items()}
    # a and b share one literal; OPENAI_API_KEY is taken in secrets.env, _2 by the source.
    assert names == {"a": "OPENAI_API_KEY_3", "b": "OPENAI_API_KEY_3", "c": "OPENAI_API_KEY_4",
                     "d": "OPENAI_API_KEY_2", "e": "MINE"}  # fmt: skip
    assert result.secrets == {
        "OPENAI_API_KEY_3": "sk-one-0123456789",
        "OPENAI_API_KEY_4": "sk-two-0123456789",
    }


def test_local_kind_from_what_answers_then_port_then_provider() -> None:
    data = source(
        entry("on-9000", "openai/x", api_base="http://localhost:9000/v1"),
        entry("vllm-odd-port", "hosted_vllm/org/model", api_base="http://127.0.0.1:8101/v1"),
        entry("unknown-port", "openai/y", api_base="http://127.0.0.1:9999/v1"),
        entry("lan-ollama", "ollama/llama3", api_base="http://192.168.1.20:11434"),
        entry("no-base-ollama", "ollama/mistral"),
    )
    served = {9000: Served("llama-server", ("x", "/models/x.gguf"))}
    result = run(data, served=served)
    assert outcome(result, "model_list[0]")[0] == "mapped"
    assert result.config["models"]["on-9000"]["source"] == "/models/x.gguf"
    assert result.config["backends"]["llama-server"]["port"] == 9000
    state, why = outcome(result, "model_list[1]")
    assert state == "guessed" and "the provider prefix hosted_vllm/ says vllm" in why
    state, why = outcome(result, "model_list[2]")
    assert state == "unmapped" and "port 9999 is none of the backends' default ports" in why
    # An Ollama on another machine is a remote model, routed as it was.
    assert result.config["models"]["lan-ollama"] == {
        "remote": {"provider": "ollama", "model": "llama3", "api_base": "http://192.168.1.20:11434"}
    }
    assert result.config["models"]["no-base-ollama"]["backend"] == "ollama"


def test_entries_that_cannot_be_models() -> None:
    data = source(
        entry("gpt-4o", "openai/gpt-4o"),
        entry("gpt-4o", "azure/gpt-4o", api_base="https://x.openai.azure.com"),
        entry("openai/*", "openai/*"),
        entry("has space", "openai/gpt-4o"),
        {"model_name": "no-params"},
        entry("env-base", "openai/x", api_base="os.environ/MY_BASE"),
        entry("noprefix", "some-model"),
        entry("gpt-4.1", "gpt-4.1"),
        entry("azure-odd", "azure/x", api_base="https://x.openai.azure.com", api_version="2024 10 21"),
        entry("two-ggufs", "openai/qwen", api_base="http://localhost:8080/v1"),
    )
    found = detection(
        ggufs=[g for g in detection().ggufs]
        + [type(detection().ggufs[0])(MATCHING_GGUF.with_name("qwen-1.5b.gguf"), 1)]
    )
    result = run(data, found=found, served={})
    assert (
        "a second deployment of gpt-4o (already mapped from model_list[0] (gpt-4o))"
        in outcome(result, "model_list[1]")[1]
    )
    assert "wildcard" in outcome(result, "model_list[2]")[1]
    assert "not an llmctl model id" in outcome(result, "model_list[3]")[1]
    assert "needs model_name and litellm_params.model" in outcome(result, "model_list[4]")[1]
    assert "api_base comes from the environment" in outcome(result, "model_list[5]")[1]
    assert "no provider prefix" in outcome(result, "model_list[6]")[1]
    assert outcome(result, "model_list[7]")[0] == "guessed"  # gpt-* is OpenAI's
    assert result.config["models"]["gpt-4.1"]["remote"]["provider"] == "openai"
    assert "api_version is not one llmctl can write" in outcome(result, "model_list[8]")[1]
    assert "2 GGUF files here match 'qwen'" in outcome(result, "model_list[9]")[1]
    assert set(result.config["models"]) == {"gpt-4o", "gpt-4.1"}


def test_two_names_on_one_llama_server() -> None:
    data = source(
        entry("first", "openai/first", api_base="http://localhost:8080/v1"),
        entry("second", "openai/second", api_base="http://localhost:8080/v1"),
    )
    served = {8080: Served("llama-server", ("/models/first.gguf",))}
    result = run(data, served=served)
    assert result.config["backends"]["llama-server"]["model"] == "first"
    state, why = outcome(result, "model_list[1]")
    assert state == "guessed" and "a model it can switch to" in why


def test_fallbacks_keep_mapped_models_and_break_cycles() -> None:
    result = run()
    assert result.config["gateway"]["fallbacks"] == {
        "gpt-4o": ["claude-sonnet", "llama3.1:latest"],
        "llama3.1:latest": ["llama-cpp-default", "gpt-oss:20b-cloud"],
        "llama-cpp-default": ["llama-cpp-native"],
    }
    assert outcome(result, "router_settings.fallbacks[1] (claude-sonnet) -> gpt-4o") == (
        "unmapped",
        "claude-sonnet -> gpt-4o would close a fallback cycle, which llmctl refuses",
    )
    assert outcome(result, "router_settings.fallbacks[1] (claude-sonnet) -> bedrock-claude") == (
        "unmapped",
        "bedrock-claude was not mapped",
    )
    data = source(
        entry("a", "openai/a"),
        entry("b", "openai/b"),
        router_settings={"fallbacks": [{"a": ["a", "b"]}, {"ghost": ["a"]}]},
        litellm_settings={"fallbacks": [{"b": ["a"]}, {"a": ["b"]}]},
    )
    result = run(data)
    assert result.config["gateway"]["fallbacks"] == {"a": ["b"]}
    assert "fall back to itself" in outcome(result, "router_settings.fallbacks[0] (a) -> a")[1]
    assert "ghost was not mapped" in outcome(result, "router_settings.fallbacks[1]")[1]
    assert "would close a fallback cycle" in outcome(result, "litellm_settings.fallbacks[0] (b) -> a")[1]


def test_settings_llmctl_owns_go_to_its_keys() -> None:
    gateway = run().config["gateway"]
    assert {k: gateway[k] for k in ("routing_strategy", "num_retries", "timeout", "allowed_fails")} == {
        "routing_strategy": "simple-shuffle",
        "num_retries": 3,
        "timeout": 300,
        "allowed_fails": 2,
    }
    assert gateway["cooldown_time"] == 60 and isinstance(gateway["cooldown_time"], int)
    data = source(
        entry("a", "openai/a"),
        router_settings={"routing_strategy": "round-robin", "num_retries": 4},
        litellm_settings={"num_retries": 1, "request_timeout": 0},
    )
    result = run(data)
    assert "routing_strategy" not in result.config["gateway"]
    state, why = outcome(result, "router_settings.routing_strategy")
    assert state == "unmapped" and why.startswith("Input should be 'simple-shuffle'")
    assert why.endswith("; not carried")
    assert result.config["gateway"]["num_retries"] == 4
    assert "router_settings.num_retries (4) is carried" in outcome(result, "litellm_settings.num_retries")[1]
    assert "greater than or equal to 1" in outcome(result, "litellm_settings.request_timeout")[1]
    # What the source leaves unset keeps LiteLLM's default where llmctl's would differ.
    assert result.config["gateway"]["timeout"] == 6000  # LiteLLM's request_timeout
    assert result.config["gateway"]["cooldown_time"] == 5
    assert "allowed_fails" not in result.config["gateway"]  # the same in both: 3
    assert outcome(result, "router_settings.cooldown_time (not set)") == (
        "mapped",
        "LiteLLM's default 5 kept (llmctl's own default is 30)",
    )


def test_settings_llmctl_has_no_key_for_are_passed_through_or_reported() -> None:
    result = run()
    passed = result.config["gateway"].get("litellm", {})
    for key in ("router_settings.retry_policy", "router_settings.allowed_fails_policy",
                "litellm_settings.stream_timeout", "general_settings.health_check_interval"):  # fmt: skip
        state, why = outcome(result, key)
        section, _, name = key.partition(".")
        if state == "mapped":
            assert name in passed[section], key
        else:  # the passthrough's allow-list refused it: taken out again, with its reason
            assert why.startswith("gateway.litellm refuses it: "), (key, why)
            assert name not in passed.get(section, {})
    assert outcome(result, "litellm_settings.drop_params")[0] == "mapped"
    # Model ids in fallback-like maps are filtered like fallbacks.
    assert outcome(
        result, "router_settings.context_window_fallbacks[1] (llama3.1:latest) -> bedrock-claude"
    ) == (
        "unmapped",
        "bedrock-claude was not mapped",
    )


def test_a_secret_literal_in_a_setting_is_never_passed_through() -> None:
    data = source(
        entry("a", "openai/a"),
        general_settings={"alerting_webhook_token": "tok-LITERAL-123456789", "alerting": ["slack"]},
    )
    result = run(data)
    state, why = outcome(result, "general_settings.alerting_webhook_token")
    assert state == "unmapped" and "holds a secret" in why
    assert "tok-LITERAL-123456789" not in render_import(result) + json.dumps(result.as_dict())


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("api_key", "sk-x", True),
        ("redis_password", "hunter2", True),
        ("cache_params", {"password": "hunter2"}, True),
        ("cache_params", {"password": "os.environ/REDIS_PASSWORD"}, False),
        ("master_key", "os.environ/X", False),
        ("stream_timeout", 120, False),
        ("tokenizer", "x", False),
    ],
)
def test_holds_secret_literal(name: str, value: Any, secret: bool) -> None:
    assert holds_secret_literal(name, value) is secret


def test_environment_variables_move_unless_secrets_env_has_another_value() -> None:
    data = source(
        entry("a", "openai/a", api_key="os.environ/A_KEY"),
        environment_variables={"A_KEY": "sk-a-012345678", "B_KEY": "sk-b-new", "LITELLM_MASTER_KEY": "sk-m"},
    )
    result = run(data, existing={"B_KEY": "sk-b-old"})
    assert result.secrets == {"A_KEY": "sk-a-012345678"}
    assert "already sets B_KEY to another value" in outcome(result, "environment_variables.B_KEY")[1]
    assert "llmctl sets it" in outcome(result, "environment_variables.LITELLM_MASTER_KEY")[1]
    assert result.needed == []


def test_the_import_does_not_change_its_input() -> None:
    data = workstation()
    before = copy.deepcopy(data)
    run(data)
    assert data == before


def test_a_redis_cache_maps_to_gateway_cache() -> None:
    result = run()
    assert result.config["gateway"]["cache"] == {"type": "redis", "ttl": 3600}
    state, why = outcome(result, "litellm_settings.cache_params")
    assert state == "mapped" and "carried: ttl; not used: host, password, port" in why
    assert outcome(result, "router_settings.redis_host")[0] == "unmapped"
    parse_config(render_import(result))
    # What gateway.cache refuses is taken out alone, with its reason.
    data = workstation()
    data["litellm_settings"]["cache_params"] |= {"mode": "sometimes", "namespace": "litellm.prod"}
    result = run(data)
    assert result.config["gateway"]["cache"] == {"type": "redis", "ttl": 3600, "namespace": "litellm.prod"}
    assert outcome(result, "litellm_settings.cache_params.mode")[0] == "unmapped"


def test_the_prometheus_callback_maps_to_litellm_metrics() -> None:
    assert "litellm_metrics" not in run().config["gateway"]  # the source has none: off, the default
    data = source(entry("a", "openai/a"), litellm_settings={"callbacks": ["prometheus", "langfuse"]})
    result = run(data)
    assert result.config["gateway"]["litellm_metrics"] is True
    assert outcome(result, "litellm_settings.callbacks (prometheus)")[0] == "mapped"
    assert result.config["gateway"].get("litellm", {}).get("litellm_settings", {}).get("callbacks") in (
        ["langfuse"],
        None,  # the passthrough may refuse it: then it is reported
    )


def test_drop_params_left_unset_keeps_litellms_default() -> None:
    result = run(source(entry("a", "openai/a")))
    state, why = outcome(result, "litellm_settings.drop_params (not set)")
    assert state == "mapped" and "LiteLLM's default false kept" in why
    assert result.config["gateway"]["litellm"]["litellm_settings"]["drop_params"] is False
    assert "drop_params (not set)" not in json.dumps(run().as_dict())  # the workstation sets it
