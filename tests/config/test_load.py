"""Every bad config is refused with its YAML path, what is wrong, and a hint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from llmctl.config.load import load_config, parse_config
from llmctl.config.schema import Kind
from llmctl.errors import ConfigError, ExitCode
from tests.conftest import dump, minimal_config


def problems(config: dict[str, Any] | str) -> list[str]:
    text = config if isinstance(config, str) else dump(config)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.details


def test_minimal_config_is_valid_and_frozen() -> None:
    config, _warnings = parse_config(dump(minimal_config()))
    assert config.backends["llama"].kind is Kind.LLAMA_SERVER
    assert config.backends["llama"].host == "127.0.0.1"
    with pytest.raises(Exception, match="frozen"):
        config.backends["llama"].port = 1


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "config" / "llmctl.example.yaml"
    loaded = load_config(example)
    kinds = {b.kind for b in loaded.config.backends.values()}
    assert kinds == set(Kind)
    ports = {b.port for b in loaded.config.backends.values()}
    assert ports == {11434, 8000, 8080, 8001}


def test_unknown_key_suggests_the_right_one() -> None:
    config = minimal_config()
    config["backends"]["llama"]["prot"] = 8081
    [message] = problems(config)
    assert message.startswith("backends.llama.prot (line 8): unknown key; did you mean 'port'?")


def test_unknown_top_level_and_model_keys() -> None:
    config = minimal_config(modles={})
    config["models"]["tiny"]["contex"] = 4
    found = problems(config)
    assert any("modles" in p and "did you mean 'models'" in p for p in found)
    assert any("models.tiny.contex" in p and "did you mean 'context'" in p for p in found)


def test_unknown_kind_lists_the_kinds() -> None:
    config = minimal_config()
    config["backends"]["llama"]["kind"] = "llamacpp"
    [message] = problems(config)
    assert "backends.llama" in message and "ollama, llama-server, llama-cpp-python, vllm" in message


def test_strict_types_no_coercion() -> None:
    config = minimal_config()
    config["backends"]["llama"]["port"] = "8080"
    [message] = problems(config)
    assert message.startswith("backends.llama.port")


def test_yaml_boolean_in_environment_says_quote_it() -> None:
    config = minimal_config()
    config["backends"]["llama"]["environment"] = {"FLAG": True}
    [message] = problems(config)
    assert "backends.llama.environment.FLAG" in message and "quote it" in message


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range(port: int) -> None:
    config = minimal_config()
    config["backends"]["llama"]["port"] = port
    [message] = problems(config)
    assert message.startswith("backends.llama.port")


def test_model_pointing_at_unknown_backend() -> None:
    config = minimal_config()
    config["models"]["other"] = {"backend": "lama", "source": "/m/o.gguf"}
    [message] = problems(config)
    assert (
        message.startswith("models.other.backend")
        and "unknown backend 'lama'; did you mean 'llama'?" in message
    )


def test_backend_model_not_served_by_it() -> None:
    config = minimal_config()
    config["backends"]["second"] = {
        "kind": "llama-server",
        "command": "/x/llama-server",
        "port": 8081,
        "model": "tiny",
    }
    [message] = problems(config)
    assert message.startswith("backends.second.model")
    assert "not served by this backend (its backend is 'llama')" in message


def test_backend_model_unknown() -> None:
    config = minimal_config()
    config["backends"]["llama"]["model"] = "tinny"
    [message] = problems(config)
    assert "unknown model 'tinny'; did you mean 'tiny'?" in message


@pytest.mark.parametrize(
    ("kind", "source", "fragment"),
    [
        ("llama-server", "Qwen/Qwen2.5-7B", "cannot serve a hf repo"),
        ("llama-cpp-python", "llama3.1:8b", "cannot serve a ollama tag"),
        ("ollama", "/models/x.gguf", "cannot serve a gguf"),
        ("llama-server", "models/x.gguf", "relative paths are ambiguous"),
    ],
)
def test_model_kind_the_backend_cannot_serve(kind: str, source: str, fragment: str) -> None:
    config = minimal_config()
    backend = config["backends"]["llama"]
    backend["kind"] = kind
    if kind == "ollama":
        backend.pop("model")
    config["models"]["tiny"]["source"] = source
    found = problems(config)
    assert any(p.startswith("models.tiny.source") and fragment in p for p in found), found


def test_fallback_to_unknown_model() -> None:
    config = minimal_config()
    config["gateway"]["fallbacks"] = {"tiny": ["huge"]}
    [message] = problems(config)
    assert message.startswith("gateway.fallbacks.tiny[0]") and "unknown fallback model 'huge'" in message


def test_fallback_cycle_is_reported_with_its_path() -> None:
    config = minimal_config()
    config["models"]["a"] = {"remote": {"provider": "openai", "model": "a"}}
    config["models"]["b"] = {"remote": {"provider": "openai", "model": "b"}}
    config["gateway"]["fallbacks"] = {"tiny": ["a"], "a": ["b"], "b": ["tiny"]}
    [message] = problems(config)
    assert "fallback cycle: a -> b -> tiny -> a" in message


def test_duplicate_ports() -> None:
    config = minimal_config()
    config["gateway"]["port"] = 8080
    [message] = problems(config)
    assert message.startswith("gateway.port") and "also used by backends.llama" in message


def test_non_loopback_host_needs_opt_in() -> None:
    config = minimal_config()
    config["backends"]["llama"]["host"] = "0.0.0.0"
    [message] = problems(config)
    assert message.startswith("backends.llama.host") and "allow_non_loopback: true" in message
    config["backends"]["llama"]["allow_non_loopback"] = True
    parse_config(dump(config))


def test_gateway_non_loopback_needs_opt_in() -> None:
    config = minimal_config()
    config["gateway"]["host"] = "192.168.1.5"
    [message] = problems(config)
    assert message.startswith("gateway.host")


@pytest.mark.parametrize(
    ("where", "value"),
    [("command", "/opt/llama\nExecStartPre=/bin/evil"), ("args", ["ok", "bad\rvalue"])],
)
def test_control_characters_are_refused(where: str, value: Any) -> None:
    config = minimal_config()
    config["backends"]["llama"][where] = value
    [message] = problems(config)
    assert message.startswith(f"backends.llama.{where}") and "control characters" in message


def test_bad_names() -> None:
    config = minimal_config()
    config["backends"]["Llama_Bad"] = config["backends"].pop("llama")
    found = problems(config)
    assert any("Llama_Bad" in p for p in found)


def test_remote_and_local_are_exclusive() -> None:
    config = minimal_config()
    config["models"]["tiny"]["remote"] = {"provider": "openai", "model": "x"}
    found = problems(config)
    assert any(p.startswith("models.tiny") and "remote model takes no" in p for p in found)


def test_duplicate_yaml_keys_are_refused() -> None:
    text = dump(minimal_config()).replace("port: 8080", "port: 8080\n    port: 8081")
    [message] = problems(text)
    assert "duplicate key" in message and "backends.llama.port" in message


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 1\nbackends: [\n", "x.yaml")
    assert "not valid YAML" in info.value.message
    assert "line" in info.value.details[0]


def test_version_is_required() -> None:
    config = minimal_config()
    del config["version"]
    [message] = problems(config)
    assert message.startswith("version") and "missing" in message


def test_missing_files_are_warnings_and_errors_with_strict(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(dump(minimal_config()))
    loaded = load_config(path)
    described = [w.describe() for w in loaded.warnings]
    assert any("backends.llama.command" in w and "not found" in w for w in described)
    assert any("models.tiny.source" in w and "does not exist" in w for w in described)
    with pytest.raises(ConfigError) as info:
        load_config(path, strict=True)
    assert info.value.exit_code == ExitCode.USAGE


def test_missing_config_file_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "no config file" in info.value.message and info.value.hint


def test_all_problems_reported_at_once() -> None:
    config = copy.deepcopy(minimal_config())
    config["backends"]["llama"]["port"] = 70000
    config["backends"]["llama"]["hots"] = "x"
    assert len(problems(config)) == 2


@pytest.mark.parametrize(
    ("where", "typo", "suggestion"),
    [
        (("supervisor", "liveness"), "intervall", "interval"),
        (("supervisor", "metrics"), "prot", "port"),
        (("snapshots",), "kepe", "keep"),
        (("models", "tiny", "remote"), "api_bse", "api_base"),
    ],
)
def test_unknown_nested_keys_get_a_suggestion(where: tuple[str, ...], typo: str, suggestion: str) -> None:
    config = minimal_config()
    if where[0] == "models":
        config["models"]["remote-one"] = {"remote": {"provider": "openai", "model": "x"}}
        where = ("models", "remote-one", "remote")
    node = config
    for key in where:
        node = node.setdefault(key, {})
    node[typo] = 1
    [message] = problems(config)
    assert f"did you mean '{suggestion}'?" in message, message


# --- api_key (vLLM started with a key llmctl generates) -----------------------------------------


def vllm_config(**backend: Any) -> dict[str, Any]:
    config = minimal_config()
    config["backends"]["vllm"] = {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8001, **backend}
    return config


def test_api_key_is_off_by_default_and_opt_in_on_vllm() -> None:
    config, _ = parse_config(dump(vllm_config()))
    assert config.backends["vllm"].api_key is False  # type: ignore[union-attr]
    config, _ = parse_config(dump(vllm_config(api_key=True)))
    assert config.backends["vllm"].api_key is True  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["llama-server", "llama-cpp-python", "ollama"])
def test_api_key_on_another_kind_says_which_kinds_take_it(kind: str) -> None:
    config = minimal_config()
    config["backends"]["llama"]["kind"] = kind
    config["backends"]["llama"]["api_key"] = True
    if kind == "ollama":
        del config["backends"]["llama"]["model"]
    [message] = problems(config)
    assert message.startswith("backends.llama.api_key (line ")
    assert message.endswith(f": only vllm backends take api_key (this one is {kind})")


def test_a_key_as_the_value_is_refused_without_echoing_it() -> None:
    [message] = problems(vllm_config(api_key="sk-secret-value"))
    assert message.startswith("backends.vllm.api_key (line ")
    assert "never the key itself" in message and "sk-secret-value" not in message


def test_a_key_in_environment_or_args_is_refused_without_echoing_it() -> None:
    config = vllm_config(
        environment={"VLLM_API_KEY": "sk-env-value"}, args=["--dtype", "half", "--api-key=sk-arg"]
    )
    [message] = problems(config)
    assert message.startswith("backends.vllm (line ")
    assert "environment.VLLM_API_KEY and args[2]" in message and "api_key: true" in message
    assert "sk-env-value" not in message and "sk-arg" not in message
    [message] = problems(vllm_config(api_key=True, args=["--api-key", "sk-arg"]))
    assert "args[0]" in message and "sk-arg" not in message
