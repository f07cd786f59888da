"""docs/config-reference.md is what the schema says now, and says it about every key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmctl.cli.config_reference import render_reference, undescribed
from llmctl.config.schema import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
REGENERATE = "python -m llmctl.cli.config_reference > docs/config-reference.md"


def rows() -> dict[str, list[str]]:
    """key -> [type, default, meaning] from the tables of the checked-in file."""
    out = {}
    for line in DOC.read_text().splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line)
        if match:
            out[match[1]] = [c.strip() for c in re.split(r"(?<!\\)\|", match[2])]
    return out


def test_the_checked_in_reference_is_current() -> None:
    assert DOC.read_text() == render_reference(), f"docs/config-reference.md is stale: {REGENERATE}"


def test_every_key_says_what_it_means() -> None:
    assert undescribed() == [], "add description= to these fields in llmctl/config/schema.py"


def keys(value: Any, path: str, maps: dict[str, str]) -> list[str]:
    """Every key path of a dumped config, map keys replaced by NAME / ID."""
    if not isinstance(value, dict):
        return []
    out = []
    for key, inner in value.items():
        name = maps[path] if path in maps else str(key)
        here = f"{path}.{name}" if path else name
        if path not in maps:
            out.append(here)
        out += keys(inner, here, maps)
    return out


def test_every_key_of_a_full_config_is_in_it() -> None:
    """Independent of the generator: a config with every kind and section, all defaults filled."""
    backend = {"host": "127.0.0.1", "command": "/bin/true"}
    config = Config.model_validate(
        {
            "version": 1,
            "backends": {
                "a": backend | {"kind": "llama-server", "port": 1},
                "b": backend | {"kind": "llama-cpp-python", "port": 2},
                "c": backend | {"kind": "vllm", "port": 3},
                "d": backend | {"kind": "ollama", "port": 4},
            },
            "models": {"r": {"remote": {"provider": "openai", "model": "gpt"}}},
            "supervisor": {"backends": {"a": {}}},
        },
        strict=False,
    )
    dumped = config.model_dump(mode="json")
    maps = {"backends": "NAME", "models": "ID", "supervisor.backends": "NAME"}
    documented = rows()
    missing = [k for k in keys(dumped, "", maps) if k not in documented]
    assert missing == [], f"not in docs/config-reference.md: {missing}; {REGENERATE}"


def test_rows_carry_type_default_and_meaning() -> None:
    documented = rows()
    assert documented["gateway.port"] == [
        "port (1 to 65535)", "`4000`", "Port of the gateway (held by its socket unit).",
    ]  # fmt: skip
    assert documented["backends.NAME.port"][1] == "required"
    assert documented["snapshots.keep"][:2] == ["integer (>= 1, <= 10000)", "`20`"]
    assert documented["backends.NAME.kind"][0] == "`llama-server` or `llama-cpp-python` or `vllm` or `ollama`"
