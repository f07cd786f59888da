"""llmctl init --demo's config: the demo stack, with paths that read back as written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmctl import init
from llmctl.init import demo
from tests.init.fakes import loads


def test_demo_config_is_the_demo_stack() -> None:
    text = init.demo_config(
        llama_server=Path("/opt/llama-server"),
        llama_cpp_python=Path("/venvs/l/bin/python"),
        litellm=Path("/venvs/lite llm/bin/litellm"),
        model=Path("/state/smoke.gguf"),
        port_base=18080,
    )
    config = loads(text)
    assert config == {
        "version": 1,
        "backends": {
            "native": {
                "kind": "llama-server", "command": "/opt/llama-server", "port": 18080, "model": "smoke-native", "gpus": []
            },
            "pyserver": {
                "kind": "llama-cpp-python", "command": "/venvs/l/bin/python", "port": 18081, "model": "smoke-py",
                "gpus": [],
            },
        },
        "models": {
            "smoke-native": {"backend": "native", "source": "/state/smoke.gguf", "context": 512},
            "smoke-py": {"backend": "pyserver", "source": "/state/smoke.gguf", "context": 512},
        },
        "gateway": {"command": "/venvs/lite llm/bin/litellm", "port": 18082, "fallbacks": {"smoke-native": ["smoke-py"]}},
    }  # fmt: skip


@pytest.mark.parametrize("value", ["/a b/c", "/x: y", "/yes", "/n#o", "/plain/path-1.0_x"])
def test_scalars_read_back_the_same(value: str) -> None:
    assert yaml.safe_load(f"k: {demo._scalar(value)}") == {"k": value}
