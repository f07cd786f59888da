"""vLLM's claim, Ollama's report and blobs, and estimate_model's choice per backend kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.backends.base import LoadedModel
from llmctl.errors import LlmctlError
from llmctl.estimate import (
    estimate_gguf,
    estimate_model,
    estimate_ollama,
    estimate_vllm,
    ollama_blob,
)
from tests.estimate.fakes import GQA, kv_formula, make_config, model


def test_vllm_claim_is_utilisation_times_total() -> None:
    est = estimate_vllm(24 * 1024**3, 0.9)
    assert est.claim_gpu == 23_192_823_399 == est.gpu_bytes
    assert est.method == "vllm"


def test_ollama_uses_its_report_when_loaded(models: Path) -> None:
    gguf_est = estimate_gguf(model(models, GQA), context=2048, gpu_layers=99)
    loaded = LoadedModel("llama3:8b", size=6_000, size_vram=5_000, expires_at=None)
    reported = estimate_ollama(loaded, gguf_est)
    assert (reported.method, reported.gpu_bytes, reported.cpu_bytes) == ("ollama-ps", 5_000, 1_000)
    assert estimate_ollama(None, gguf_est) is gguf_est


def test_estimate_model_per_backend_kind(tmp_path: Path, models: Path) -> None:
    gguf_path = model(models, GQA)
    ollama_dir = tmp_path / "ollama"
    digest = "sha256:" + "ab" * 32
    manifest = ollama_dir / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest}]})
    )
    (ollama_dir / "blobs").mkdir()
    (ollama_dir / "blobs" / digest.replace(":", "-")).write_bytes(gguf_path.read_bytes())
    config = make_config(
        tmp_path,
        {
            "ls": {"kind": "llama-server", "command": "/bin/true", "port": 8081},
            "ol": {"kind": "ollama", "command": "/bin/true", "port": 11434, "models_dir": str(ollama_dir)},
            "vl": {"kind": "vllm", "command": "/bin/true", "port": 8000, "gpu_memory_utilization": 0.5},
        },
        {
            "a": {"backend": "ls", "source": str(gguf_path), "context": 2048},
            "c": {"backend": "ol", "source": "tiny:q4"},
            "d": {"backend": "ol", "source": "absent:7b"},
            "v": {"backend": "vl", "source": "org/model"},
        },
    )
    c = config
    assert ollama_blob(ollama_dir, "tiny:q4") == ollama_dir / "blobs" / digest.replace(":", "-")
    direct = estimate_model(c, "a", "ls")
    assert direct.kv_gpu == kv_formula(GQA, 2048)
    via_ollama = estimate_model(c, "c", "ol")
    assert via_ollama.weights_gpu == direct.weights_gpu and via_ollama.kv_gpu == kv_formula(GQA, 4096)
    loaded = [LoadedModel("tiny:q4", size=10, size_vram=7, expires_at=None)]
    assert estimate_model(c, "c", "ol", ollama_loaded=loaded).gpu_bytes == 7
    with pytest.raises(LlmctlError, match="'absent:7b' is not pulled"):
        estimate_model(c, "d", "ol")
    assert estimate_model(c, "v", "vl", gpu_totals=[1000]).gpu_bytes == 500
    assert estimate_model(c, "a", "ls", cpu_only=True).gpu_bytes == 0
