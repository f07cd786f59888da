"""docs/config-reference.md is what the schema says now, and says it about every key."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmctl.cli.config_reference import render_reference, undescribed
from llmctl.config.litellm_settings import (
    GeneralSettings,
    LiteLLMPassthrough,
    LitellmSettings,
    RouterSettings,
)
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


def _passthrough_keys(cls: type[BaseModel], path: str) -> list[str]:
    """Every key gateway.litellm accepts, walked from the models (not from the generator)."""
    out = []
    for name, info in cls.model_fields.items():
        key = f"{path}.{name}"
        out.append(key)
        annotation = info.annotation
        inner = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        for tp in inner:
            is_map = typing.get_origin(tp) is dict
            value, below = (typing.get_args(tp)[1], f"{key}.ID") if is_map else (tp, key)
            if isinstance(value, type) and issubclass(value, BaseModel):
                out += _passthrough_keys(value, below)
    return out


def test_every_key_the_litellm_passthrough_accepts_is_in_it() -> None:
    accepted = _passthrough_keys(LiteLLMPassthrough, "gateway.litellm")
    assert "gateway.litellm.router_settings.model_group_retry_policy.ID.DefaultRetries" in accepted
    assert "gateway.litellm.litellm_settings.s3_callback_params.s3_aws_secret_access_key" in accepted
    documented = rows()
    missing = [k for k in accepted if k not in documented]
    assert missing == [], f"not in docs/config-reference.md: {missing}; {REGENERATE}"


def test_the_reference_names_each_refused_key_in_its_section() -> None:
    text = DOC.read_text()
    for section, cls in (
        ("router_settings", RouterSettings),
        ("litellm_settings", LitellmSettings),
        ("general_settings", GeneralSettings),
    ):
        body = text.split(f"## `gateway.litellm.{section}`\n", 1)[1].split("\n## ", 1)[0]
        note = body.split("| key |", 1)[0]
        for key, why in cls.REFUSED.items():
            assert f"`{key}`" in note and why in note, (section, key)
