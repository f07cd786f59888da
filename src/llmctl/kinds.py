"""Backend kinds, in a module of their own: the readiness gate each unit runs needs them
without importing the config schema (pydantic), which would add ~0.13 s to every start."""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    OLLAMA = "ollama"
    LLAMA_SERVER = "llama-server"
    LLAMA_CPP_PYTHON = "llama-cpp-python"
    VLLM = "vllm"
