"""Failure signatures recognise real log lines and name the runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.signatures import SIGNATURES, match_lines

# Real lines: from this machine's llama-server / llama-cpp-python / systemd, or (CUDA) from
# upstream issue reports, since no GPU runs here.
REAL = {
    "model-file-missing": [
        "0.00.011.135 E gguf_init_from_file: failed to open GGUF file '/tmp/nope.gguf' (No such file or directory)",
        "0.00.013.368 E srv  llama_server: exiting due to model loading error",
    ],
    "model-load-failed": [
        "0.00.004.228 E cmn  common_init_: failed to load model '/tmp/c2.gguf'",
        "0.00.004.534 E srv  llama_server: exiting due to model loading error",
    ],
    "address-in-use": [
        "0.00.002.589 E srv         start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 18998",
        "0.00.002.692 E srv  llama_server: exiting due to HTTP server error",
    ],
    "cuda-out-of-memory": [
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 144817.04 MiB on device 0: cudaMalloc failed: "
        "out of memory",
        "alloc_tensor_range: failed to allocate CUDA0 buffer of size 151851674624",
        "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
    ],
    "no-cuda-device": ["ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected"],
    "start-limit-hit": [
        "llmctl-native.service: Start request repeated too quickly.",
        "llmctl-native.service: Failed with result 'start-limit-hit'.",
    ],
}


@pytest.mark.parametrize("expected", sorted(REAL))
def test_real_lines_are_recognised_most_specific_first(expected: str) -> None:
    matches = match_lines(REAL[expected])
    assert matches[0].signature.id == expected
    assert matches[0].line == REAL[expected][0].strip() or expected in ("model-load-failed",)


def test_uvicorn_bind_error_and_missing_model_of_llama_cpp_python() -> None:
    lines = [
        "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 18995): address already in use",
        "ValueError: Model path does not exist: /tmp/nope.gguf",
    ]
    assert [m.signature.id for m in match_lines(lines)] == ["address-in-use", "model-file-missing"]


def test_ordinary_lines_match_nothing() -> None:
    lines = [
        "srv  llama_server: model loaded",
        "INFO:     Application startup complete.",
        "slot release: id 0",
    ]
    assert match_lines(lines) == []


def test_each_signature_names_a_runbook_that_exists() -> None:
    runbooks = Path(__file__).parents[1] / "docs" / "runbooks"
    for signature in SIGNATURES:
        assert (runbooks / f"{signature.runbook}.md").is_file(), signature.runbook
