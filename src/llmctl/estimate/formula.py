"""The memory llama.cpp will allocate for a GGUF model, from its header alone.

Used for llama-server, llama-cpp-python, and Ollama for a model it has not loaded yet (the facts
come from `llmctl.estimate.gguf_facts`). `estimate_gguf`.

The GGUF formula (llama.cpp, default split mode; every size in bytes):

    n_off     = min(gpu_layers, L + 1)                 layers offloaded; the (L+1)th is the output
    weights   = sum of tensor bytes (n_elements x type_size / block_size; every shard of a split set)
                GPU: blk.i.* for i >= L - n_off; output.* and output_norm.* when n_off > L (a model
                without output.weight ties it to token_embd, which is then copied to the GPU too)
                CPU: the rest; token_embd.* always ("input layers are not offloaded")
    repack    = (CPU only) the weights the CPU backend repacks for its matrix kernels, in a
                CPU_REPACK buffer beside the mapped file (which still spans them): Q4_0, Q4_K,
                IQ4_NL, MXFP4 matrices with rows in eights (x86-64 AVX2; gguf_facts.REPACK_ROWS),
                of the layers kept on the CPU, and of the output matrix while it is on the CPU
                (a tied output is its own copy). A GPU's layers are never repacked.
    cells     = pad(context, 256) with one unified KV stream (llama-server's default), else
                parallel x pad(ceil(context / parallel), 256)
                sliding-window layers (gguf_facts: the header's pattern or the architecture's):
                pad(min(cells, window x sequences_per_stream + ubatch), 256) per stream, unless
                swa_full (llama-server --swa-full; llama.cpp's C API and so llama-cpp-python)
    kv        = sum over layers of cells_i x kv_heads_i x (key_length x bytes(type_k)
                                                           + value_length x bytes(type_v))
                (on the device of the layer; bytes(): f16 2, q8_0 34/32, q4_0 18/32, ...)
    compute   = the graph allocator's peak for one micro-batch of t = min(n_ubatch, context) tokens,
                in f32 rows of t x 4 bytes (calibrated against llama.cpp's own log, see below):
                  mask        cells_per_stream x t x (2 with flash attention, 4 without)
                  attention   max(5 E, 4 E + 2 W)  rows with flash attention,
                              5 E + 2 W rows + cells_per_stream x heads (the KQ matrix) without
                  ffn         3 F + 4 E rows when F > 2 E (every common model); 3 F + 3 E when
                              E < F <= 2 E (3 F + 4 E - F with only 2 layers); 3 F + 2 E when F <= E
                              (only with 2+ layers: the last layer runs its FFN on output rows only)
                  logits      parallel x n_vocab x 4
                compute = mask + t x 4 x max(attention, ffn) + logits
                (E = max(embedding_length, head_count x key_length), F = feed_forward_length,
                 W = head_count_kv x max(key_length, value_length)); Gemma 3 has terms of its own
                 (`_compute_gemma3`: two masks, and the logits do not add to the layers' peak).
                 "parallel" here is `outputs`: llama-cpp-python asks for n_batch rows.
                With partial offload the GPU's buffer also stages the largest CPU-side layer's
                weights (llama.cpp copies them over for big batches): added, not measured here.
    output    = max(outputs, parallel) x n_vocab x 4: the logits buffer (llama_context::output_reserve),
                always host memory (CPU_Host; on CUDA pinned "CUDA_Host output buffer")
    overhead  = 512 MiB per process on each GPU it uses (CUDA context, cuBLAS workspace;
                Ollama reserves 457 MiB, vLLM reports 1.3 GiB of "non-torch memory").
    on GPU    = weights_gpu + kv_gpu + compute + overhead     (nothing when the backend is CPU only)
    on host   = weights_cpu + repack + kv_cpu + compute_cpu + output

The compute terms were fitted on tiny random llama models and on Gemma 3 270M (the real model
and variants of its shape) against llama-server's `compute buffer size` lines
(bench/estimate_accuracy.py reports the error per component). Every figure was measured on CPU
(-ngl 0). Which term describes which device: weights, KV and compute follow the layers (GPU for
offloaded ones); repack exists on the CPU only; output is host memory on both; overhead is the
GPU's only. A CUDA backend allocates the same graph, so the same compute terms should apply, but
that was not measured here (no GPU).
"""

from __future__ import annotations

from pathlib import Path

from llmctl.errors import ExitCode, LlmctlError
from llmctl.estimate.gguf_facts import GgufInfo, read_gguf
from llmctl.estimate.result import Estimate, MiB

KV_CELL_PAD = 256  # llama.cpp pads the KV cache size to a multiple of 256 cells
DEFAULT_UBATCH = 512  # llama.cpp -ub
# Architectures whose compute buffer follows Gemma 3's graph (`_compute_gemma3`), not llama's.
GEMMA3_GRAPH = frozenset({"gemma3"})
PROCESS_OVERHEAD = 512 * MiB

# KV cache element sizes as (bytes per block, elements per block), by llama.cpp's type names.
KV_TYPES: dict[str, tuple[int, int]] = {
    "f32": (4, 1),
    "f16": (2, 1),
    "bf16": (2, 1),
    "q8_0": (34, 32),
    "q4_0": (18, 32),
    "q4_1": (20, 32),
    "q5_0": (22, 32),
    "q5_1": (24, 32),
    "iq4_nl": (18, 32),
}


def _pad(value: int, to: int) -> int:
    return -(-value // to) * to


def kv_bytes_per_element(cache_type: str) -> tuple[int, int]:
    try:
        return KV_TYPES[cache_type.lower()]
    except KeyError:
        raise LlmctlError(
            f"unknown KV cache type {cache_type!r}",
            hint=f"One of: {', '.join(KV_TYPES)}",
            exit_code=ExitCode.USAGE,
        ) from None


def estimate_gguf(
    path: Path | GgufInfo,
    *,
    context: int,
    gpu_layers: int,
    kv_cache_type: str = "f16",
    kv_cache_type_v: str | None = None,
    parallel: int = 1,
    kv_unified: bool = True,
    flash_attention: bool = True,
    ubatch: int = DEFAULT_UBATCH,
    cpu_only: bool = False,
    overhead: int = PROCESS_OVERHEAD,
    swa_full: bool = False,
    outputs: int | None = None,
) -> Estimate:
    """What llama.cpp will allocate for this model (see the module docstring for the formula).

    `context` is llama.cpp's -c (all slots together); `parallel` the number of sequences (-np);
    `kv_unified` whether they share one KV stream (llama-server's default with -np auto; an
    explicit -np N gives N streams of context/N). `cpu_only`: the backend sees no GPU.
    `swa_full`: the sliding-window layers get a full-size cache (llama-server --swa-full; the
    default of llama.cpp's C API, so of llama-cpp-python). `outputs`: the logit rows one
    micro-batch computes, at most (default one per sequence, as llama-server asks; llama-cpp-python
    asks for every token of its batch).
    """
    info = path if isinstance(path, GgufInfo) else read_gguf(path)
    if context < 1 or parallel < 1 or ubatch < 1:
        raise ValueError("context, parallel and ubatch must be positive")
    notes: list[str] = []
    offloaded = 0 if cpu_only else max(0, min(gpu_layers, info.layers + 1))
    first_gpu_layer = info.layers - min(offloaded, info.layers)
    weights_gpu, weights_cpu = _weights(info, offloaded)

    type_v = kv_cache_type_v or kv_cache_type
    streams = 1 if kv_unified else parallel
    cells_per_stream = _pad(context if kv_unified else -(-context // parallel), KV_CELL_PAD)
    swa_cells = _swa_cells(info, cells_per_stream, parallel, kv_unified, min(ubatch, context), swa_full)
    kv_layers = _kv_per_layer(info, cells_per_stream, swa_cells, streams, kv_cache_type, type_v)
    if info.sliding_window and not info.swa_pattern_known:
        notes.append(
            f"sliding-window attention ({info.sliding_window} tokens): which layers use it is not"
            f" known for {info.architecture}, so every layer is costed in full (an upper bound)"
        )
    if not flash_attention and type_v not in ("f32", "f16", "bf16"):
        notes.append("llama.cpp needs flash attention for a quantised V cache")

    rows_out = max(1, outputs if outputs is not None else parallel)
    if rows_out > parallel:
        # llama-cpp-python's --logits_all: its Python side copies every token's logits into a
        # context x n_vocab float32 array as the context fills (seen: +1.3 GiB RSS after one
        # 452-token prompt on Gemma 3 270M); that is outside llama.cpp's buffers.
        kept = context * info.vocab * 4
        notes.append(
            f"every token's logits are kept (llama-cpp-python's --logits_all, its default): up to"
            f" {kept / MiB:,.0f} MiB more as the context fills, not counted here"
            " (--logits_all false avoids it)"
        )
    compute = _compute(
        info,
        context,
        cells_per_stream,
        swa_cells,
        outputs=rows_out,
        flash_attention=flash_attention,
        ubatch=ubatch,
    )
    if cpu_only or offloaded == 0:
        compute_gpu, compute_cpu = (0, compute) if cpu_only else (compute, compute)
    elif offloaded <= info.layers:
        # Partial offload: both devices hold a graph buffer, and the GPU's also stages the
        # weights of CPU layers for big batches (llama.cpp's op offload).
        staged = max(info.layer_bytes[:first_gpu_layer], default=0)
        compute_gpu, compute_cpu = compute + staged, compute
        notes.append("partial offload: the compute buffers are an allowance, not measured")
    else:
        compute_gpu, compute_cpu = compute, 0
    # The CPU backend repacks the weights of the layers it keeps (and of the output matrix while
    # it stays on the CPU) into a second buffer; the mapped file still spans them.
    repack = sum(info.layer_repack_bytes[:first_gpu_layer])
    if offloaded <= info.layers:
        repack += info.output_repack_bytes
    return Estimate(
        method="gguf",
        weights_gpu=weights_gpu,
        weights_cpu=weights_cpu,
        kv_gpu=sum(kv_layers[first_gpu_layer:]),
        kv_cpu=sum(kv_layers[:first_gpu_layer]),
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
        repack_cpu=repack,
        # llama.cpp's output buffer: one logit row per sequence at first, grown to the most
        # outputs a batch has asked for (llama_context::output_reserve); in host memory always.
        output_cpu=max(rows_out, parallel) * info.vocab * 4,
        overhead_gpu=0 if cpu_only else overhead,
        context=context,
        kv_cache_type=kv_cache_type if type_v == kv_cache_type else f"{kv_cache_type}/{type_v}",
        gpu_layers=offloaded,
        notes=tuple(notes),
    )


def _weights(info: GgufInfo, offloaded: int) -> tuple[int, int]:
    """(bytes on the GPU, bytes on the host) with the last `offloaded` layers on the GPU."""
    first_gpu_layer = info.layers - min(offloaded, info.layers)
    output_on_gpu = offloaded > info.layers
    gpu = sum(info.layer_bytes[first_gpu_layer:])
    if offloaded:
        gpu += info.other_bytes
    # A tied output matrix is token_embd itself: the host keeps it for the input, and the GPU
    # gets its own copy as the output layer.
    tied_copy = info.token_embd_bytes if output_on_gpu and info.tied_output else 0
    if output_on_gpu:
        gpu += info.output_bytes + tied_copy
    return gpu, info.weight_bytes - gpu + tied_copy


def _swa_cells(
    info: GgufInfo, cells_per_stream: int, parallel: int, unified: bool, ubatch: int, swa_full: bool
) -> int:
    """Cells per stream of the sliding-window layers' cache (llama_kv_cache_iswa): the window for
    every sequence sharing the stream plus one micro-batch, padded to 256, at most the full cache."""
    if not info.sliding_window or swa_full or not any(info.swa_layers):
        return cells_per_stream
    window = info.sliding_window * (parallel if unified else 1) + ubatch
    return _pad(min(cells_per_stream, window), KV_CELL_PAD)


def _kv_per_layer(
    info: GgufInfo, cells: int, swa_cells: int, streams: int, type_k: str, type_v: str
) -> list[int]:
    k_block, k_elems = kv_bytes_per_element(type_k)
    v_block, v_elems = kv_bytes_per_element(type_v)
    windowed = info.swa_layers or (False,) * info.layers
    out = []
    for kv_heads, swa in zip(info.kv_heads, windowed, strict=True):
        k_row = -(-kv_heads * info.key_length * k_block // k_elems)
        v_row = -(-kv_heads * info.value_length * v_block // v_elems)
        out.append((swa_cells if swa else cells) * streams * (k_row + v_row))
    return out


def _compute(
    info: GgufInfo,
    context: int,
    cells_per_stream: int,
    swa_cells: int,
    *,
    outputs: int,
    flash_attention: bool,
    ubatch: int,
) -> int:
    """The graph allocator's peak for one micro-batch (calibrated; see the module docstring)."""
    tokens = min(ubatch, context)
    if info.architecture in GEMMA3_GRAPH:
        return _compute_gemma3(info, cells_per_stream, swa_cells, tokens, outputs, flash_attention)
    row = tokens * 4  # one f32 activation row per token
    max_heads = max(info.heads, default=1)
    e = max(info.embedding, max_heads * info.key_length)
    width_kv = max(info.kv_heads, default=0) * max(info.key_length, info.value_length)
    ff = info.feed_forward
    # gate, up and their product (3 F) beside the residual stream and the normed input (2 E);
    # how many more E rows the allocator's fragmentation adds depends on F / E and, below
    # F = 2 E, on whether a second full FFN reuses the first one's blocks (measured).
    # The last layer runs its FFN on the output rows only, so a 1-layer model has no FFN peak.
    if info.layers < 2:
        ffn = 0
    elif ff > 2 * e:
        ffn = 3 * ff + 4 * e
    elif ff > e:
        ffn = 3 * ff + (3 * e if info.layers > 2 else 4 * e - ff)
    else:
        ffn = 3 * ff + 2 * e
    if flash_attention:
        mask = cells_per_stream * tokens * 2  # f16
        attention = max(5 * e, 4 * e + 2 * width_kv) * row
    else:
        mask = cells_per_stream * tokens * 4  # f32
        kq = cells_per_stream * tokens * max_heads * 4
        attention = (5 * e + 2 * width_kv) * row + kq
    logits = outputs * info.vocab * 4  # the worst-case graph's output rows (one per sequence)
    return mask + max(attention, ffn * row) + logits


def _compute_gemma3(
    info: GgufInfo, cells: int, swa_cells: int, tokens: int, outputs: int, flash_attention: bool
) -> int:
    """Gemma 3's graph (GELU FFN, norms after attention and FFN, Q/K norms, attention wider than
    the residual stream): its own terms, fitted on the real Gemma 3 270M and twelve variants of
    its shape (E, F, heads, head size, KV heads, 2 layers), every one within 0.01 MiB of the log.

    Rows of t x 4 bytes, E = embedding_length, F = feed_forward_length, Q = heads x key_length:
      ffn        3 F + 3 E, plus Q when Q < F (a freed attention block the FFN's rows do not fit
                 in); 3 F + 2 E when F <= E
      attention  2 Q + 3 E with flash attention; without it 2 Q + 3 E + 4 key_length rows and the
                 KQ matrix (cells x t x heads x 4)
      masks      one per cache (full, sliding-window; only for a kind of layer the model has):
                 cells x t x 2 (f16), x 4 without FA
      inputs     token ids and positions (i32), each cache's K and V cell indices (i64)
    compute = max(masks + inputs + max(attention, ffn), logits + 2 E x outputs rows): the output
    product comes once the layers' blocks and the masks are free, beside the final norm's two
    rows per output; it matters only when many rows are asked for (llama-cpp-python's 512 rows of
    a 262k vocabulary: 514.50 MiB logged, the same estimated).
    """
    row = tokens * 4
    e, ff = info.embedding, info.feed_forward
    max_heads = max(info.heads, default=1)
    q = max_heads * info.key_length
    # A cache (and its mask and cell indices) exists only for a kind of layer the model has.
    windowed = any(info.swa_layers)
    full = not info.swa_layers or not all(info.swa_layers)
    caches = int(windowed) + int(full)
    mask_cells = (cells if full else 0) + (swa_cells if windowed else 0)
    inputs = (2 + 4 * caches) * row
    ffn = 3 * ff + 3 * e + (q if q < ff else 0) if ff > e else 3 * ff + 2 * e
    if flash_attention:
        mask = mask_cells * tokens * 2
        attention = (2 * q + 3 * e) * row
    else:
        mask = mask_cells * tokens * 4
        attention = (2 * q + 3 * e + 4 * info.key_length) * row + cells * tokens * max_heads * 4
    tail = outputs * info.vocab * 4 + 2 * e * outputs * 4
    return max(mask + inputs + max(attention, ffn * row), tail)
