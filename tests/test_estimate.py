"""The memory estimator on real (tiny) GGUF files written by write_smoke_model."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from llmctl.backends.ollama import LoadedModel
from llmctl.config.load import load_config
from llmctl.config.schema import Config
from llmctl.errors import LlmctlError
from llmctl.estimate import (
    PROCESS_OVERHEAD,
    MiB,
    estimate_gguf,
    estimate_model,
    estimate_ollama,
    estimate_vllm,
    launch_shape,
    ollama_blob,
    read_gguf,
)
from llmctl.smoke_model import TOKENS, SmokeShape, _add_metadata, _add_tensors, write_smoke_model
from tests.conftest import write_config

VOCAB = len(TOKENS)
GQA = SmokeShape(
    layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=768, context=4096, weight_type="f16"
)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    return directory


def model(directory: Path, shape: SmokeShape, name: str = "m.gguf") -> Path:
    return write_smoke_model(directory / name, shape)


def tensor_bytes(path: Path) -> dict[str, int]:
    return {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}


def kv_formula(shape: SmokeShape, cells: int, bytes_per_elem: float = 2.0) -> int:
    """2 x layers x cells x kv_heads x head_dim x bytes: the textbook KV size."""
    return int(2 * shape.layers * cells * shape.kv_heads * shape.head_size * bytes_per_elem)


@pytest.mark.parametrize(
    "shape",
    [
        SmokeShape(),  # 2 layers, 64 wide, MHA, f32
        GQA,
        SmokeShape(layers=3, embedding=128, heads=4, kv_heads=1, feed_forward=384, weight_type="q8_0"),
        SmokeShape(layers=2, embedding=256, heads=8, kv_heads=4, feed_forward=512, weight_type="q4_0"),
    ],
    ids=["f32-mha", "f16-gqa4", "q8_0-mqa", "q4_0-gqa2"],
)
def test_weights_are_the_tensor_bytes_and_kv_follows_the_shape(models: Path, shape: SmokeShape) -> None:
    path = model(models, shape)
    sizes = tensor_bytes(path)
    est = estimate_gguf(path, context=1024, gpu_layers=999)
    # Full offload: everything but the token embedding is on the GPU.
    assert est.weights_gpu == sum(sizes.values()) - sizes["token_embd.weight"]
    assert est.weights_cpu == sizes["token_embd.weight"]
    assert est.kv_gpu == kv_formula(shape, 1024) and est.kv_cpu == 0
    assert est.overhead_gpu == PROCESS_OVERHEAD
    assert est.gpu_bytes == est.weights_gpu + est.kv_gpu + est.compute_gpu + est.overhead_gpu
    assert est.gpu_layers == shape.layers + 1


def test_quantised_weights_take_the_block_sizes(models: Path) -> None:
    base = SmokeShape(layers=2, embedding=256, heads=4, kv_heads=4, feed_forward=512)
    by_type = {
        t: read_gguf(model(models, SmokeShape(**{**base.__dict__, "weight_type": t}), f"{t}.gguf"))
        for t in ("f32", "f16", "q8_0", "q4_0")
    }
    per_layer_params = 4 * 256 * 256 + 3 * 256 * 512  # q, k, v, o + gate, up, down
    norms = 2 * 256 * 4  # two f32 norms per layer stay f32
    expected = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
    for weight_type, info in by_type.items():
        assert info.layer_bytes[0] == per_layer_params * expected[weight_type] + norms, weight_type


def test_gqa_shrinks_the_kv_cache_by_the_head_ratio(models: Path) -> None:
    mha = estimate_gguf(
        model(models, SmokeShape(**{**GQA.__dict__, "kv_heads": 8}), "mha.gguf"), context=2048, gpu_layers=99
    )
    gqa = estimate_gguf(model(models, GQA, "gqa.gguf"), context=2048, gpu_layers=99)
    assert mha.kv_gpu == 4 * gqa.kv_gpu == kv_formula(GQA, 2048) * 4


def test_kv_cache_types_and_padding(models: Path) -> None:
    path = model(models, GQA)
    f16 = estimate_gguf(path, context=2048, gpu_layers=99)
    q8 = estimate_gguf(path, context=2048, gpu_layers=99, kv_cache_type="q8_0")
    q4 = estimate_gguf(path, context=2048, gpu_layers=99, kv_cache_type="q4_0")
    assert q8.kv_gpu == f16.kv_gpu * 34 // 64
    assert q4.kv_gpu == f16.kv_gpu * 18 // 64
    # llama.cpp pads the cache to 256 cells: -c 1100 holds 1280 (measured: 0.62 MiB for GQA 2 layers).
    assert estimate_gguf(path, context=1100, gpu_layers=99).kv_gpu == kv_formula(GQA, 1280)
    # An explicit -np N gives N streams of ceil(context / N) cells, each padded.
    streams = estimate_gguf(path, context=1100, gpu_layers=99, parallel=2, kv_unified=False)
    assert streams.kv_gpu == kv_formula(GQA, 2 * 768)
    with pytest.raises(LlmctlError, match="unknown KV cache type 'q3_k'"):
        estimate_gguf(path, context=512, gpu_layers=99, kv_cache_type="q3_k")


def test_partial_offload_puts_the_last_layers_on_the_gpu(models: Path) -> None:
    path = model(models, GQA)
    info = read_gguf(path)
    sizes = tensor_bytes(path)
    full_kv = kv_formula(GQA, 1024)
    one = estimate_gguf(path, context=1024, gpu_layers=1)
    assert one.weights_gpu == info.layer_bytes[3]
    assert one.kv_gpu == full_kv // 4 and one.kv_cpu == full_kv * 3 // 4
    assert one.weights_gpu + one.weights_cpu == sum(sizes.values())
    assert one.compute_gpu > one.compute_cpu  # it also stages a CPU layer's weights
    every_layer = estimate_gguf(path, context=1024, gpu_layers=4)  # the output layer stays on the CPU
    assert every_layer.weights_gpu == sum(info.layer_bytes)
    whole = estimate_gguf(path, context=1024, gpu_layers=5)
    assert whole.weights_gpu == sum(info.layer_bytes) + sizes["output.weight"] + sizes["output_norm.weight"]
    none = estimate_gguf(path, context=1024, gpu_layers=0)
    assert none.weights_gpu == none.kv_gpu == 0
    assert none.overhead_gpu == PROCESS_OVERHEAD  # a CUDA build still makes a context and a buffer
    cpu = estimate_gguf(path, context=1024, gpu_layers=99, cpu_only=True)
    assert cpu.gpu_bytes == 0 and cpu.weights_cpu == sum(sizes.values()) and cpu.kv_cpu == full_kv


def test_compute_buffer_matches_llama_cpp_logs(models: Path) -> None:
    # Figures llama-server -v logged for these shapes (CPU, -ngl 0, default -ub 512, -np auto):
    # the estimator's compute term must stay within 1 % of them.
    cases = [
        (
            SmokeShape(layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=512, weight_type="f16"),
            2048,
            6.51,
        ),
        (
            SmokeShape(layers=2, embedding=256, heads=8, kv_heads=2, feed_forward=1024, weight_type="f16"),
            512,
            8.51,
        ),
        (
            SmokeShape(layers=2, embedding=512, heads=8, kv_heads=2, feed_forward=1280, weight_type="f16"),
            512,
            12.01,
        ),
    ]
    for i, (shape, context, logged_mib) in enumerate(cases):
        est = estimate_gguf(
            model(models, shape, f"c{i}.gguf"), context=context, gpu_layers=0, cpu_only=True, parallel=4
        )
        assert est.compute_cpu / MiB == pytest.approx(logged_mib, rel=0.01), shape


def test_compute_grows_with_context_and_more_without_flash_attention(models: Path) -> None:
    path = model(models, GQA)
    short = estimate_gguf(path, context=512, gpu_layers=99)
    long = estimate_gguf(path, context=4096, gpu_layers=99)
    no_fa = estimate_gguf(path, context=4096, gpu_layers=99, flash_attention=False)
    assert long.compute_gpu > short.compute_gpu
    # Without flash attention the KQ matrix (cells x tokens x heads x 4 B) is materialised.
    assert no_fa.compute_gpu - long.compute_gpu >= 4096 * 512 * GQA.heads * 4 - 8 * MiB


def test_split_files_are_summed(models: Path) -> None:
    single = model(models, GQA, "whole.gguf")
    writer = gguf.GGUFWriter(models / "split.gguf", arch="llama", split_max_tensors=15)
    _add_metadata(writer, GQA, seed=0, name="llmctl-smoke")
    _add_tensors(writer, GQA, seed=0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shards = sorted(models.glob("split-*-of-*.gguf"))
    assert len(shards) == 3
    whole = estimate_gguf(single, context=1024, gpu_layers=99)
    for shard in shards:  # any shard names the whole set
        split = estimate_gguf(shard, context=1024, gpu_layers=99)
        assert split.weights_gpu == whole.weights_gpu and split.kv_gpu == whole.kv_gpu
    assert read_gguf(shards[1]).files == tuple(shards)
    shards[2].unlink()
    with pytest.raises(LlmctlError, match=r"1 of its 3 shards are missing: split-00003-of-00003\.gguf"):
        read_gguf(shards[0])


def test_truncated_and_corrupt_files_are_refused(models: Path) -> None:
    path = model(models, GQA)
    data = path.read_bytes()
    cut_in_data = models / "cut.gguf"
    cut_in_data.write_bytes(data[: len(data) - 1000])
    with pytest.raises(LlmctlError, match="truncated"):
        read_gguf(cut_in_data)
    cut_in_header = models / "head.gguf"
    cut_in_header.write_bytes(data[:300])
    with pytest.raises(LlmctlError, match=r"not a readable GGUF model \(truncated or corrupt\)"):
        read_gguf(cut_in_header)
    garbage = models / "junk.gguf"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(LlmctlError, match="not a readable GGUF model"):
        read_gguf(garbage)
    with pytest.raises(LlmctlError, match="does not exist"):
        read_gguf(models / "missing.gguf")


def test_header_facts(models: Path) -> None:
    info = read_gguf(model(models, GQA))
    assert (info.architecture, info.layers, info.embedding, info.feed_forward) == ("llama", 4, 256, 768)
    assert info.heads == (8,) * 4 and info.kv_heads == (2,) * 4
    assert (info.key_length, info.value_length, info.context_length, info.vocab) == (32, 32, 4096, VOCAB)
    assert not info.tied_output and info.sliding_window is None


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


def _config(tmp_path: Path, backends: dict[str, object], models_: dict[str, object]) -> Config:
    path = write_config(tmp_path / "c.yaml", {"version": 1, "backends": backends, "models": models_})
    return load_config(path).config


def test_launch_shape_reads_the_flags_llmctl_passes_and_the_args(tmp_path: Path, models: Path) -> None:
    gguf_path = str(model(models, GQA))
    config = _config(
        tmp_path,
        {
            "ls": {"kind": "llama-server", "command": "/bin/true", "port": 8081,
                   "args": ["-ctk", "q8_0", "--cache-type-v=q8_0", "-fa", "off", "-np", "2", "-ub", "256"]},
            "lcp": {"kind": "llama-cpp-python", "command": "/bin/true", "port": 8082, "gpus": [],
                    "args": ["--type_k", "8", "--flash_attn", "true"]},
            "ol": {"kind": "ollama", "command": "/bin/true", "port": 11434,
                   "environment": {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_KV_CACHE_TYPE": "q4_0"}},
        },
        {
            "a": {"backend": "ls", "source": gguf_path, "context": 3000},
            "b": {"backend": "lcp", "source": gguf_path},
            "c": {"backend": "ol", "source": "tiny:q4"},
        },
    )  # fmt: skip
    c = config
    ls = launch_shape(c.backends["ls"], c.models["a"])
    assert (ls.context, ls.kv_cache_type, ls.kv_cache_type_v, ls.flash_attention) == (
        3000,
        "q8_0",
        "q8_0",
        False,
    )
    assert (ls.parallel, ls.kv_unified, ls.ubatch, ls.gpu_layers) == (2, False, 256, 999)
    lcp = launch_shape(c.backends["lcp"], c.models["b"])
    assert (lcp.context, lcp.kv_cache_type, lcp.flash_attention, lcp.cpu_only) == (4096, "q8_0", True, True)
    ol = launch_shape(c.backends["ol"], c.models["c"])
    assert (ol.context, ol.parallel, ol.kv_cache_type) == (8192, 2, "q4_0")  # num_ctx x parallel


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
    config = _config(
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
