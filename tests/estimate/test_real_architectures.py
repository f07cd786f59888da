"""What a real architecture adds to the formula, on tiny GGUF files shaped like Gemma 3: layers
that attend through a sliding window (a smaller KV cache), weights the CPU backend repacks (a
second host buffer), and the output buffer. The figures against llama.cpp's own log for the real
Gemma 3 270M are checked in tests/integration/test_real_model.py."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from llmctl.estimate import estimate_gguf, read_gguf

Q4_K = gguf.GGMLQuantizationType.Q4_K
Q8_0 = gguf.GGMLQuantizationType.Q8_0
VOCAB = 264  # a multiple of 8: the tied output matrix would qualify for repacking by its rows
EMBD, HEADS, KV_HEADS, HEAD, FF, WINDOW = 256, 2, 1, 128, 512, 64


def gemma_like(
    path: Path,
    *,
    layers: int = 12,
    arch: str = "gemma3",
    window: int | None = WINDOW,
    pattern: int | list[bool] | None = None,
    embd_type: gguf.GGMLQuantizationType = Q8_0,
    odd_rows: bool = False,
    vocab: int = VOCAB,
) -> Path:
    """A Gemma-3-shaped header with zero weights: Q4_K matrices (rows a multiple of 8 unless
    `odd_rows`, where attn_k gets 260 rows), a tied token_embd of `embd_type`, no output.weight."""
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_block_count(layers)
    writer.add_context_length(32768)
    writer.add_embedding_length(EMBD)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD)
    writer.add_value_length(HEAD)
    writer.add_vocab_size(vocab)
    if window is not None:
        writer.add_sliding_window(window)
    if isinstance(pattern, list):
        writer.add_array(f"{arch}.attention.sliding_window_pattern", pattern)
    elif pattern is not None:
        writer.add_uint32(f"{arch}.attention.sliding_window_pattern", pattern)

    def raw(name: str, rows: int, cols: int, qtype: gguf.GGMLQuantizationType) -> None:
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        data = np.zeros((rows, cols // block * block_bytes), dtype=np.uint8)
        writer.add_tensor(name, data, raw_dtype=qtype)

    raw("token_embd.weight", vocab, EMBD, embd_type)
    writer.add_tensor("output_norm.weight", np.ones(EMBD, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBD, dtype=np.float32))
        raw(f"blk.{i}.attn_q.weight", HEADS * HEAD, EMBD, Q4_K)
        raw(f"blk.{i}.attn_k.weight", 260 if odd_rows else KV_HEADS * HEAD, EMBD, Q4_K)
        raw(f"blk.{i}.attn_v.weight", KV_HEADS * HEAD, EMBD, Q8_0)
        raw(f"blk.{i}.attn_output.weight", EMBD, HEADS * HEAD, Q4_K)
        raw(f"blk.{i}.ffn_gate.weight", FF, EMBD, Q4_K)
        raw(f"blk.{i}.ffn_up.weight", FF, EMBD, Q4_K)
        raw(f"blk.{i}.ffn_down.weight", EMBD, FF, Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def kv_layer(cells: int) -> int:
    """One layer's f16 K and V for `cells` cells."""
    return cells * KV_HEADS * (HEAD + HEAD) * 2


def test_gemma3_windows_five_layers_in_six_and_sizes_their_cache_by_the_window(models: Path) -> None:
    info = read_gguf(gemma_like(models / "g.gguf"))
    assert info.swa_layers == tuple(i % 6 < 5 for i in range(12))
    est = estimate_gguf(info, context=2048, gpu_layers=0, cpu_only=True, parallel=4)
    # llama_kv_cache_iswa: the windowed layers hold window x 4 sequences + one micro-batch (512),
    # padded to 256 cells: 64 x 4 + 512 = 768; the 2 full layers hold the whole 2048.
    assert est.kv_cpu == 2 * kv_layer(2048) + 10 * kv_layer(768)
    assert not any("upper bound" in note for note in est.notes)
    # One sequence, or --swa-full (llama-cpp-python's default), or a window wider than the
    # context: the arithmetic follows llama.cpp's min(full, window x seqs + ubatch).
    one = estimate_gguf(info, context=2048, gpu_layers=0, cpu_only=True, parallel=1)
    assert one.kv_cpu == 2 * kv_layer(2048) + 10 * kv_layer(768)  # 64 + 512 -> 768
    full = estimate_gguf(info, context=2048, gpu_layers=0, cpu_only=True, parallel=4, swa_full=True)
    assert full.kv_cpu == 12 * kv_layer(2048)
    short = estimate_gguf(info, context=512, gpu_layers=0, cpu_only=True, parallel=4)
    assert short.kv_cpu == 12 * kv_layer(512)


def test_the_pattern_key_wins_and_an_unknown_architecture_is_costed_in_full(models: Path) -> None:
    every_other = read_gguf(gemma_like(models / "p.gguf", layers=4, pattern=2))
    assert every_other.swa_layers == (True, False, True, False)
    listed = read_gguf(gemma_like(models / "l.gguf", layers=4, pattern=[False, True, True, False]))
    assert listed.swa_layers == (False, True, True, False)
    unknown = gemma_like(models / "u.gguf", layers=4, arch="llama")
    est = estimate_gguf(unknown, context=2048, gpu_layers=0, cpu_only=True, parallel=4)
    assert est.kv_cpu == 4 * kv_layer(2048)
    assert any("upper bound" in note for note in est.notes)
    no_window = read_gguf(gemma_like(models / "n.gguf", layers=4, window=None))
    assert no_window.swa_layers == (False,) * 4 and no_window.sliding_window is None


def test_the_cpu_repacks_its_layers_q4_k_matrices_with_rows_in_eights(models: Path) -> None:
    path = gemma_like(models / "r.gguf")
    q4k_per_layer = sum(
        t.n_bytes
        for t in gguf.GGUFReader(path).tensors
        if t.name.startswith("blk.0.") and t.tensor_type == Q4_K
    )
    cpu = estimate_gguf(path, context=512, gpu_layers=0, cpu_only=True)
    # Q8_0 (attn_v, token_embd) is not repacked on x86-64; every Q4_K matrix is.
    assert cpu.repack_cpu == 12 * q4k_per_layer
    # Offloaded layers are not repacked: with the last 5 on the GPU, 7 stay on the CPU.
    partial = estimate_gguf(path, context=512, gpu_layers=5)
    assert partial.repack_cpu == 7 * q4k_per_layer
    assert estimate_gguf(path, context=512, gpu_layers=99).repack_cpu == 0
    # A matrix whose row count is not a multiple of 8 (attn_k with 260 rows) keeps its layout.
    odd = gemma_like(models / "o.gguf", odd_rows=True)
    attn_k = KV_HEADS * HEAD * EMBD // 256 * 144  # Q4_K: 144 bytes per 256 values
    assert estimate_gguf(odd, context=512, gpu_layers=0, cpu_only=True).repack_cpu == 12 * (
        q4k_per_layer - attn_k
    )


def test_a_tied_output_of_a_repacked_type_gets_its_own_copy(models: Path) -> None:
    q8 = estimate_gguf(gemma_like(models / "q8.gguf"), context=512, gpu_layers=0, cpu_only=True)
    q4 = estimate_gguf(
        gemma_like(models / "q4.gguf", embd_type=Q4_K), context=512, gpu_layers=0, cpu_only=True
    )
    embd = VOCAB * EMBD // 256 * 144
    assert q4.repack_cpu - q8.repack_cpu == embd  # the output matrix, repacked beside the input one


def test_the_output_buffer_holds_a_logit_row_per_output(models: Path) -> None:
    path = gemma_like(models / "o.gguf")
    server = estimate_gguf(path, context=2048, gpu_layers=0, cpu_only=True, parallel=4)
    assert server.output_cpu == 4 * VOCAB * 4
    # Asking for every token's logits (llama-cpp-python's batch of 512) needs 512 rows, in the
    # output buffer and in the graph's last matrix product, which then outweighs the layers with
    # a large vocabulary (llama-cpp-python on the real Gemma 3 270M: 514.50 MiB logged).
    big = gemma_like(models / "big.gguf", vocab=32768)
    every = estimate_gguf(big, context=2048, gpu_layers=0, cpu_only=True, parallel=1, outputs=512)
    assert every.output_cpu == 512 * 32768 * 4
    assert every.compute_cpu >= 512 * 32768 * 4
    assert any("--logits_all" in note for note in every.notes)
    one = estimate_gguf(big, context=2048, gpu_layers=0, cpu_only=True, parallel=1)
    assert one.compute_cpu < 512 * 32768 * 4 // 4 and one.notes == ()
    assert server.cpu_bytes == (
        server.weights_cpu + server.repack_cpu + server.kv_cpu + server.compute_cpu + server.output_cpu
    )
    # On a GPU the output buffer is pinned host memory: still RAM, not VRAM.
    gpu = estimate_gguf(path, context=2048, gpu_layers=99, parallel=4)
    assert gpu.output_cpu == 4 * VOCAB * 4 and gpu.gpu_bytes == (
        gpu.weights_gpu + gpu.kv_gpu + gpu.compute_gpu + gpu.overhead_gpu
    )
