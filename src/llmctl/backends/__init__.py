"""Backend adapters, one per kind."""

from __future__ import annotations

from llmctl.backends.base import Adapter, Health, Launch, Probe
from llmctl.backends.llama_cpp_python import LlamaCppPythonAdapter
from llmctl.backends.llama_server import LlamaServerAdapter
from llmctl.backends.ollama import OllamaAdapter
from llmctl.backends.vllm import VllmAdapter
from llmctl.kinds import Kind

_ADAPTERS: dict[Kind, Adapter] = {
    a.kind: a for a in (LlamaServerAdapter(), LlamaCppPythonAdapter(), VllmAdapter(), OllamaAdapter())
}


def adapter_for(kind: Kind) -> Adapter:
    return _ADAPTERS[kind]


__all__ = ["Adapter", "Health", "Launch", "Probe", "adapter_for"]
