"""The demo config `llmctl init --demo` writes, and the smoke model it serves when none is given."""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.errors import LlmctlError

DEMO_PORT_BASE = 18080


def _scalar(value: str) -> str:
    """A YAML scalar for a path or name: plain when that reads back the same, else quoted."""
    import yaml  # noqa: PLC0415

    plain = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    return plain if plain == value else json.dumps(value)


def demo_config(
    *, llama_server: Path, llama_cpp_python: Path, litellm: Path, model: Path, port_base: int = DEMO_PORT_BASE
) -> str:
    """The demo stack: llama-server and llama-cpp-python on one (smoke) model, behind the gateway,
    with a fallback from the first to the second."""
    return f"""\
# The llmctl demo stack (written by `llmctl init --demo`). The model is a smoke-test model with
# random weights: its answers are noise; it proves the servers load a model and serve requests.
version: 1
backends:
  native:
    kind: llama-server
    command: {_scalar(str(llama_server))}
    port: {port_base}
    model: smoke-native
    gpus: []
  pyserver:
    kind: llama-cpp-python
    command: {_scalar(str(llama_cpp_python))}
    port: {port_base + 1}
    model: smoke-py
    gpus: []
models:
  smoke-native:
    backend: native
    source: {_scalar(str(model))}
    context: 512
  smoke-py:
    backend: pyserver
    source: {_scalar(str(model))}
    context: 512
gateway:
  command: {_scalar(str(litellm))}
  port: {port_base + 2}
  fallbacks:
    smoke-native: [smoke-py]
"""


def ensure_smoke_model(path: Path) -> bool:
    """Write the smoke model at path unless it exists; True when written."""
    if path.exists():
        return False
    try:
        from llmctl.smoke_model import write_smoke_model  # noqa: PLC0415

        path.parent.mkdir(parents=True, exist_ok=True)
        write_smoke_model(path)
    except ImportError as exc:
        raise LlmctlError(
            f"cannot write the smoke model: {exc}",
            hint="reinstall llmctl (gguf is a dependency), or give a GGUF file with --model PATH",
        ) from None
    except (OSError, ValueError) as exc:
        raise LlmctlError(f"cannot write the smoke model {path}: {exc}") from None
    return True
