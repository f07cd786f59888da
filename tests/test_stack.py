"""The list of managed units: order, selection by name, what each routes."""

from __future__ import annotations

import pytest

from llmctl.config.load import parse_config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.stack import select, stack_units
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
