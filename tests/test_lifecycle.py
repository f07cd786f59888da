"""`up` creates the key file of every backend started with an API key, once."""

from __future__ import annotations

from llmctl.config.load import parse_config
from llmctl.lifecycle import ensure_backend_keys
from llmctl.paths import Paths
from llmctl.secrets import read_backend_key
from tests.conftest import dump, minimal_config


def test_key_files_are_created_for_keyed_backends_only_and_only_once(paths: Paths) -> None:
    config = minimal_config()
    config["backends"]["b-vllm"] = {
        "kind": "vllm",
        "command": "/opt/vllm/bin/vllm",
        "port": 8001,
        "api_key": True,
    }
    config["backends"]["a-vllm"] = {"kind": "vllm", "command": "/opt/vllm/bin/vllm", "port": 8002}
    parsed, _ = parse_config(dump(config))
    assert ensure_backend_keys(parsed, paths) == ["b-vllm"]
    key = read_backend_key(paths.backend_key_file("b-vllm"), "VLLM_API_KEY")
    assert not paths.backend_key_file("a-vllm").exists() and not paths.backend_key_file("llama").exists()
    assert ensure_backend_keys(parsed, paths) == []
    assert read_backend_key(paths.backend_key_file("b-vllm"), "VLLM_API_KEY") == key
