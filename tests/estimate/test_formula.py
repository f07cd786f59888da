"""The GGUF memory formula on real (tiny) GGUF files written by write_smoke_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.estimate import (
    PROCESS_OVERHEAD,
    MiB,
    estimate_gguf,
    read_gguf,
)
from llmctl.smoke_model import SmokeShape
from tests.estimate.fakes import GQA, kv_formula, model, tensor_bytes


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
