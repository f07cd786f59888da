"""The machine and the LiteLLM configs the --from-litellm tests import.

`workstation()` is a LiteLLM config shaped like real hand-tuned ones (tests/init/data/); the
machine has llama-server and llama-cpp-python on PATH, a GGUF whose name matches the
llama-server entry, an Ollama with one of the two tags pulled, and a llama-cpp-python on port
8000 that says which GGUF it serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmctl.init import Detection, FoundExecutable, GgufFile
from llmctl.init.from_litellm import Import, Served, import_litellm

DATA = Path(__file__).parent / "data"
WORKSTATION = DATA / "litellm_workstation.yaml"
CLAUDE_KEY = "sk-ant-api03-LITERAL-0123456789abcdefghij"
GROQ_KEY = "gsk_LITERAL_groq_0123456789abcdef"
MASTER_KEY = "sk-master-LITERAL-abcdefghijklmnop"
SERVED_GGUF = "/home/user/models/llama-3.2-3b-instruct-q4_k_m.gguf"
MATCHING_GGUF = Path("/home/user/models/Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf")


def workstation() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKSTATION.read_text())
    return data


def detection(**overrides: Any) -> Detection:
    def found(kind: str, path: str) -> list[FoundExecutable]:
        return [FoundExecutable(kind, Path(path), "PATH")]

    fields: dict[str, Any] = {
        "executables": {
            "llama-server": found("llama-server", "/usr/local/bin/llama-server"),
            "llama-cpp-python": found("llama-cpp-python", "/home/user/venvs/llama/bin/python3"),
            "ollama": found("ollama", "/usr/local/bin/ollama"),
            "vllm": [],
            "litellm": found("litellm", "/home/user/venvs/litellm/bin/litellm"),
        },
        "ggufs": [GgufFile(MATCHING_GGUF, 4_000_000_000), GgufFile(Path("/home/user/models/other.gguf"), 1)],
        "model_dirs": [Path("/home/user/models")],
        "scan_truncated": False,
        "ollama_models": ["llama3.1:latest", "nomic-embed-text:latest"],
        "gpus": [],
        "gpu_note": "NVML Shared Library Not Found",
    }
    return Detection(**(fields | overrides))


SERVED = {8000: Served("llama-cpp-python", (SERVED_GGUF,))}


def probe(port: int) -> Served | None:
    return SERVED.get(port)


def run(
    data: dict[str, Any] | None = None,
    *,
    existing: dict[str, str] | None = None,
    found: Detection | None = None,
    served: dict[int, Served] | None = None,
) -> Import:
    answers = SERVED if served is None else served
    return import_litellm(
        WORKSTATION,
        workstation() if data is None else data,
        found or detection(),
        probe=answers.get,
        existing_secrets=existing or {},
    )


def outcome(result: Import, entry: str) -> tuple[str, str]:
    """(outcome, why) of the report entry whose label starts with `entry`."""
    matches = [e for e in result.report if e.entry == entry or e.entry.startswith(entry + " ")]
    assert len(matches) == 1, (entry, [e.entry for e in result.report])
    return matches[0].outcome, matches[0].why
