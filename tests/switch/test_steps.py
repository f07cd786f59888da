"""Checks a switch makes before touching anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config.load import LoadedConfig, load_config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.paths import Paths
from llmctl.switch.steps import check_backend_key
from tests.conftest import write_config


def keyed(tmp_path: Path, api_key: bool) -> LoadedConfig:
    data = {
        "version": 1,
        "backends": {"big": {"kind": "vllm", "command": "/bin/true", "port": 8000, "model": "qwen",
                             "api_key": api_key}},
        "models": {"qwen": {"backend": "big", "source": "Qwen/Qwen2.5-7B-Instruct"}},
        "gateway": {"enabled": False},
    }  # fmt: skip
    return load_config(write_config(tmp_path / "llmctl.yaml", data))


def test_a_keyed_backend_without_its_key_is_refused_before_anything(tmp_path: Path, paths: Paths) -> None:
    with pytest.raises(LlmctlError) as caught:
        check_backend_key(keyed(tmp_path, True), paths, "big")
    assert caught.value.exit_code is ExitCode.USAGE
    assert "big is configured with api_key: true but has no key yet" in caught.value.message
    assert caught.value.hint is not None and "llmctl up" in caught.value.hint


def test_with_its_key_or_without_api_key_it_passes(tmp_path: Path, paths: Paths) -> None:
    check_backend_key(keyed(tmp_path, False), paths, "big")
    key_file = paths.backend_key_file("big")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text("VLLM_API_KEY=x\n")
    check_backend_key(keyed(tmp_path, True), paths, "big")
