"""Failure signatures: the journal lines of common failures, and the runbook for each.

Each pattern was taken from a real log line (this machine's llama.cpp and systemd where they
run here; upstream issue reports for CUDA, which cannot run here). `status`, `up`, `switch`
and the supervisor's events use `match_lines` to name the runbook that fixes what they saw.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Signature:
    id: str
    runbook: str  # docs/runbooks/<runbook>.md
    summary: str
    patterns: tuple[re.Pattern[str], ...]
    # A restart cannot fix it (the supervisor records it instead of restarting blindly).
    restart_helps: bool


def _p(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "cuda-out-of-memory",
        "model-out-of-memory",
        "the GPU ran out of memory while loading the model",
        _p(
            # llama.cpp: ggml_backend_cuda_buffer_type_alloc_buffer: allocating 144817.04 MiB on
            # device 0: cudaMalloc failed: out of memory
            r"cudaMalloc failed: out of memory",
            r"unable to allocate CUDA\d* buffer",
            r"failed to allocate CUDA\d* buffer",
            # Ollama: Error: llama runner process has terminated: CUDA error: out of memory
            r"CUDA error: out of memory",
            # vLLM / PyTorch: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ...
            r"CUDA out of memory",
        ),
        restart_helps=False,
    ),
    Signature(
        "no-cuda-device",
        "gpu-missing",
        "no CUDA-capable GPU is visible to the backend",
        _p(
            r"no CUDA-capable device is detected",
            r"No CUDA GPUs are available",
            r"CUDA driver version is insufficient",
            r"failed to initialize CUDA",
        ),
        restart_helps=False,
    ),
    Signature(
        "address-in-use",
        "backend-does-not-start",
        "the port is already in use by another process",
        _p(
            # llama-server: start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080
            r"couldn't bind HTTP server socket",
            # uvicorn (llama-cpp-python, LiteLLM): [Errno 98] error while attempting to bind on
            # address ('127.0.0.1', 8000): address already in use
            r"address already in use",
        ),
        restart_helps=False,
    ),
    Signature(
        "model-file-missing",
        "backend-does-not-start",
        "the model file does not exist or cannot be opened",
        _p(
            # llama-server: gguf_init_from_file: failed to open GGUF file '/x.gguf' (No such file
            # or directory)
            r"failed to open GGUF file .*\((No such file or directory|Permission denied)\)",
            # llama-cpp-python: ValueError: Model path does not exist: /x.gguf
            r"Model path does not exist",
        ),
        restart_helps=False,
    ),
    Signature(
        "model-load-failed",
        "backend-does-not-start",
        "the server could not load the model file (corrupt, truncated or unsupported)",
        _p(
            # llama-server: srv  llama_server: exiting due to model loading error
            r"exiting due to model loading error",
            r"error loading model",
            r"failed to load model",
        ),
        restart_helps=False,
    ),
    Signature(
        "start-limit-hit",
        "backend-restart-loop",
        "systemd stopped restarting the unit after too many starts",
        _p(
            # systemd: llmctl-x.service: Start request repeated too quickly.
            r"Start request repeated too quickly",
            r"Failed with result 'start-limit-hit'",
        ),
        restart_helps=False,
    ),
)


@dataclass(frozen=True)
class Match:
    signature: Signature
    line: str


def match_lines(lines: Iterable[str]) -> list[Match]:
    """Every signature found in the lines, each once, with the first line that showed it;
    the most specific first (the order of SIGNATURES)."""
    found: dict[str, Match] = {}
    for line in lines:
        for signature in SIGNATURES:
            if signature.id not in found and any(p.search(line) for p in signature.patterns):
                found[signature.id] = Match(signature, line.strip())
    return [found[s.id] for s in SIGNATURES if s.id in found]
