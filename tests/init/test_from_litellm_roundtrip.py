"""The round trip: the imported config renders a gateway.yaml (llmctl.render.gateway) whose
routes, fallbacks and settings match the LiteLLM source for everything that was mapped.

The comparison here is written from LiteLLM's side, independently of the importer: for each
source entry the report says was carried, where its requests go (provider, model, server,
key), and for each carried setting its value in the rendered file.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.init.from_litellm import Import, Served, render_import
from llmctl.render.gateway import render_gateway_config
from tests.init.litellm_fixtures import run, workstation

# Provider prefixes that reach the same server the same way, as far as a route goes.
FAMILIES = {"ollama": "ollama", "ollama_chat": "ollama", "openai": "openai-compatible",
            "hosted_vllm": "openai-compatible"}  # fmt: skip


def server(api_base: str) -> tuple[str, int, str]:
    """Loopback names are one host; /v1 is how openai-style clients spell the same server."""
    parts = urlsplit(api_base)
    host = parts.hostname or ""
    if host in ("localhost", "0.0.0.0") or host.startswith("127."):
        host = "loopback"
    return host, parts.port or 0, parts.path.rstrip("/").removesuffix("/v1")


def rendered(result: Import) -> tuple[Config, dict[str, Any]]:
    config, _ = parse_config(render_import(result))
    served = {name: getattr(b, "model", None) for name, b in config.backends.items()}
    serving = {name: model for name, model in served.items() if isinstance(model, str)}
    gateway: dict[str, Any] = yaml.safe_load(render_gateway_config(config, serving))
    return config, gateway


def carried_entries(result: Import) -> dict[int, str]:
    """model_list index -> model id, for the entries the report says were carried."""
    out = {}
    for e in result.report:
        match = re.fullmatch(r"model_list\[(\d+)\].*", e.entry)
        if match and e.outcome != "unmapped":
            assert e.to is not None and e.to.startswith("models.")
            out[int(match.group(1))] = e.to.removeprefix("models.")
    return out


def check_routes(source: dict[str, Any], result: Import, secrets: dict[str, str]) -> int:
    config, gateway = rendered(result)
    routes = {m["model_name"]: m["litellm_params"] for m in gateway["model_list"]}
    checked = 0
    for index, model_id in carried_entries(result).items():
        item = source["model_list"][index]
        params = item["litellm_params"]
        assert model_id == item["model_name"]
        assert model_id in routes, f"{model_id} is carried but not routed"
        got = routes[model_id]
        provider, _, name = params["model"].partition("/")
        got_provider, _, got_name = got["model"].partition("/")
        if config.models[model_id].remote is not None:
            assert got["model"] == params["model"]
            assert got.get("api_base") == params.get("api_base")
            assert got.get("api_version") == params.get("api_version")
            key = params.get("api_key")
            if key is None:
                assert "api_key" not in got
            elif str(key).startswith("os.environ/"):
                assert got["api_key"] == key
            else:  # a literal: the rendered file names a variable whose value is that literal
                assert got["api_key"].startswith("os.environ/")
                assert secrets[got["api_key"].removeprefix("os.environ/")] == key
        else:
            assert FAMILIES[got_provider] == FAMILIES[provider]
            default = "http://localhost:11434" if FAMILIES[provider] == "ollama" else None
            assert server(got["api_base"]) == server(params.get("api_base") or default or "")
            if FAMILIES[provider] == "ollama":
                assert got_name == name  # the tag Ollama is asked for
        checked += 1
    assert set(routes) == set(carried_entries(result).values())
    return checked


def source_fallbacks(source: dict[str, Any], carried: set[str]) -> dict[str, list[str]]:
    """The source's fallbacks (router_settings', then litellm_settings'), for carried models."""
    out: dict[str, list[str]] = {}
    for section in ("router_settings", "litellm_settings"):
        for item in source.get(section, {}).get("fallbacks", []):
            for model, targets in item.items():
                if model in carried:
                    kept = [t for t in targets if t in carried and t != model and t not in out.get(model, [])]
                    out.setdefault(model, []).extend(kept)
    return {k: v for k, v in out.items() if v}


def test_routes_fallbacks_and_settings_match_the_source() -> None:
    source = workstation()
    result = run(source)
    assert check_routes(source, result, result.secrets) == 10
    _, gateway = rendered(result)
    router = gateway["router_settings"]
    carried = set(carried_entries(result).values())

    # Fallbacks: the source's for the carried models, less the one edge llmctl refuses (a
    # cycle: claude-sonnet -> gpt-4o, with gpt-4o -> claude-sonnet first), which is reported.
    expected = source_fallbacks(source, carried)
    expected["claude-sonnet"].remove("gpt-4o")
    expected = {k: v for k, v in expected.items() if v}
    assert {k: v for item in router["fallbacks"] for k, v in item.items()} == expected
    assert any(
        e.entry.endswith("(claude-sonnet) -> gpt-4o") and e.outcome == "unmapped" for e in result.report
    )

    # Settings: every one reported as carried has the source's value in the rendered file.
    settings = source["router_settings"] | {"request_timeout": source["litellm_settings"]["request_timeout"]}
    for e in result.report:
        if e.outcome == "unmapped" or e.to is None or not e.to.startswith("gateway."):
            continue
        section, _, key = e.entry.partition(".")
        if key.endswith("(not set)"):
            continue  # LiteLLM's defaults: test_settings_left_out_behave_as_litellm_would
        if e.to == "gateway.cache":  # LiteLLM's cache, in llmctl's Redis, with the source's ttl
            assert gateway["litellm_settings"]["cache"] is True
            params = gateway["litellm_settings"]["cache_params"]
            assert params["type"] == "redis"
            assert params["ttl"] == source["litellm_settings"]["cache_params"]["ttl"]
        elif e.to.startswith("gateway.litellm."):
            _, _, where, name = e.to.split(".", 3)
            want = source[section][key]
            if name.endswith("fallbacks"):  # fallback-like maps: the carried models only
                want = [{m: [t for t in ts if t in carried]} for item in want for m, ts in item.items()]
                want = [item for item in want if all(m in carried and ts for m, ts in item.items())]
            assert gateway[where][name] == want, e
        elif key in ("routing_strategy", "num_retries", "timeout", "cooldown_time", "allowed_fails"):
            assert router[key] == settings[key], e
        elif key == "request_timeout":
            assert gateway["litellm_settings"]["request_timeout"] == settings[key]


# LiteLLM 1.106.2's own values for router settings its config leaves out (litellm/router.py).
LITELLM_EFFECTIVE = {"routing_strategy": "simple-shuffle", "num_retries": 2, "timeout": 6000.0,
                     "cooldown_time": 5, "allowed_fails": 3}  # fmt: skip


def test_settings_left_out_behave_as_litellm_would() -> None:
    set_here: dict[str, Any] = {"cooldown_time": 12}
    source = {
        "model_list": [{"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
        "router_settings": set_here,
    }
    _, gateway = rendered(run(source))
    router = gateway["router_settings"]
    want = LITELLM_EFFECTIVE | set_here
    assert {k: router[k] for k in want} == want
    assert gateway["litellm_settings"]["request_timeout"] == LITELLM_EFFECTIVE["timeout"]
    if "litellm" in Config.model_fields["gateway"].annotation.model_fields:  # type: ignore[union-attr]
        assert gateway["litellm_settings"]["drop_params"] is False  # LiteLLM's default


def test_routes_match_for_entries_with_literal_keys_and_odd_spellings() -> None:
    source = {
        "model_list": [
            {
                "model_name": "gpt",
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-lit-0123456789"},
            },
            {
                "model_name": "groq",
                "litellm_params": {"model": "groq/llama3-8b-8192", "api_key": "gsk-lit-0123456"},
            },
            {"model_name": "ollama-no-base", "litellm_params": {"model": "ollama/qwen2.5:7b"}},
            {
                "model_name": "native",
                "litellm_params": {"model": "openai/x", "api_base": "http://0.0.0.0:8080"},
            },
        ],
        "litellm_settings": {"fallbacks": [{"gpt": ["groq", "ollama-no-base"]}]},
    }
    result = run(source, served={8080: Served("llama-server", ("/models/x.gguf",))})
    assert check_routes(source, result, result.secrets) == 4
    _, gateway = rendered(result)
    assert gateway["router_settings"]["fallbacks"] == [{"gpt": ["groq", "ollama-no-base"]}]
