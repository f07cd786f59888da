"""How much memory a model will take, before it is loaded.

Three ways, one per kind of backend:

* GGUF models (llama-server, llama-cpp-python, and Ollama for a model it has not loaded yet):
  from the file's header (`llmctl.gguf_header`: metadata and tensor table only, through mmap,
  so a 40 GB model costs a few milliseconds; checked against the `gguf` package in the tests).
  `estimate_gguf`.
* vLLM: its claim does not depend on the model. vLLM takes
  `ceil(gpu_memory_utilization x total)` of every GPU it runs on and refuses to start when less
  than that is free (`request_memory()` in vllm/v1/worker/utils.py). `estimate_vllm`.
* Ollama, for a model it has loaded: what it reports in /api/ps (`size_vram`, parsed by Ollama
  from llama-server's own buffer log). `estimate_ollama`.

The GGUF formula (llama.cpp, default split mode; every size in bytes):

    n_off     = min(gpu_layers, L + 1)                 layers offloaded; the (L+1)th is the output
    weights   = sum of tensor bytes (n_elements x type_size / block_size; every shard of a split set)
                GPU: blk.i.* for i >= L - n_off; output.* and output_norm.* when n_off > L (a model
                without output.weight ties it to token_embd, which is then copied to the GPU too)
                CPU: the rest; token_embd.* always ("input layers are not offloaded")
    cells     = pad(context, 256) with one unified KV stream (llama-server's default), else
                parallel x pad(ceil(context / parallel), 256)
    kv        = sum over layers of cells x kv_heads_i x (key_length x bytes(type_k)
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
                 W = head_count_kv x max(key_length, value_length))
                With partial offload the GPU's buffer also stages the largest CPU-side layer's
                weights (llama.cpp copies them over for big batches): added, not measured here.
    overhead  = 512 MiB per process on each GPU it uses (CUDA context, cuBLAS workspace;
                Ollama reserves 457 MiB, vLLM reports 1.3 GiB of "non-torch memory").
    on GPU    = weights_gpu + kv_gpu + compute + overhead     (nothing when the backend is CPU only)

Metadata keys read ({arch} = general.architecture): {arch}.block_count, .embedding_length,
.feed_forward_length, .context_length, .attention.head_count, .attention.head_count_kv,
.attention.key_length and .value_length (default embedding_length / head_count), .vocab_size or
the length of tokenizer.ggml.tokens, .attention.sliding_window (only to say the KV is an upper
bound), split.count (shards named NAME-0000i-of-0000N.gguf are read and summed).

The compute terms were fitted on tiny random llama models against llama-server's
`compute buffer size` lines (bench/estimate_accuracy.py reports the error per component); a real
GPU backend allocates the same graph, so the same terms apply, but that was not measured here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gguf_header import GgufError, GgufHeader, read_header

if TYPE_CHECKING:
    from llmctl.backends.ollama import LoadedModel
    from llmctl.config.schema import AnyBackend, Config, Model

MiB = 1024**2
GiB = 1024**3
KV_CELL_PAD = 256  # llama.cpp pads the KV cache size to a multiple of 256 cells
DEFAULT_UBATCH = 512  # llama.cpp -ub
PROCESS_OVERHEAD = 512 * MiB
LLAMA_SERVER_AUTO_PARALLEL = 4  # llama-server -np -1 (auto): 4 slots over one unified KV stream
OLLAMA_DEFAULT_CONTEXT = 4096

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
# llama-cpp-python's --type_k/--type_v take ggml type numbers.
GGML_TYPE_NAMES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    20: "iq4_nl",
    30: "bf16",
}

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
Method = Literal["gguf", "vllm", "ollama-ps"]


@dataclass(frozen=True)
class GgufInfo:
    """What the header of a GGUF model (all its shards) says, reduced to what the estimate needs."""

    files: tuple[Path, ...]
    architecture: str
    layers: int
    embedding: int
    feed_forward: int  # the largest, when per layer
    heads: tuple[int, ...]  # per layer
    kv_heads: tuple[int, ...]  # per layer (0 for a recurrent layer of a hybrid)
    key_length: int
    value_length: int
    context_length: int
    vocab: int
    layer_bytes: tuple[int, ...]  # blk.i.* tensors, per layer
    input_bytes: int  # token_embd.* and other input tensors: always on the host
    output_bytes: int  # output.*, output_norm.*: on the GPU once every layer is
    other_bytes: int  # anything else (rope_freqs...): with the offloaded layers
    token_embd_bytes: int
    tied_output: bool  # no output.weight: llama.cpp reuses token_embd as the output matrix
    sliding_window: int | None

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes + self.other_bytes


@dataclass(frozen=True)
class Estimate:
    """Memory one model instance needs, split by where llama.cpp puts it (bytes)."""

    method: Method
    weights_gpu: int = 0
    weights_cpu: int = 0
    kv_gpu: int = 0
    kv_cpu: int = 0
    compute_gpu: int = 0
    compute_cpu: int = 0
    overhead_gpu: int = 0  # per GPU used
    claim_gpu: int = 0  # vLLM's util x total, or Ollama's reported size_vram: no breakdown
    context: int | None = None
    kv_cache_type: str | None = None
    gpu_layers: int | None = None  # layers offloaded (after clamping to L + 1)
    notes: tuple[str, ...] = field(default=())

    @property
    def gpu_bytes(self) -> int:
        """Everything on the GPU(s), with the per-process overhead counted once."""
        return self.weights_gpu + self.kv_gpu + self.compute_gpu + self.overhead_gpu + self.claim_gpu

    @property
    def spread_bytes(self) -> int:
        """What llama.cpp splits over several GPUs (weights and KV, by layer)."""
        return self.weights_gpu + self.kv_gpu + self.claim_gpu

    @property
    def per_gpu_bytes(self) -> int:
        """What every GPU the process uses holds on top of its share (context, compute buffer)."""
        return self.compute_gpu + self.overhead_gpu

    @property
    def cpu_bytes(self) -> int:
        return self.weights_cpu + self.kv_cpu + self.compute_cpu

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gpu_bytes": self.gpu_bytes,
            "cpu_bytes": self.cpu_bytes,
            "weights_gpu_bytes": self.weights_gpu,
            "weights_cpu_bytes": self.weights_cpu,
            "kv_gpu_bytes": self.kv_gpu,
            "kv_cpu_bytes": self.kv_cpu,
            "compute_gpu_bytes": self.compute_gpu,
            "compute_cpu_bytes": self.compute_cpu,
            "overhead_gpu_bytes": self.overhead_gpu,
            "claim_gpu_bytes": self.claim_gpu,
            "context": self.context,
            "kv_cache_type": self.kv_cache_type,
            "gpu_layers": self.gpu_layers,
            "notes": list(self.notes),
        }


# --- reading the header ---------------------------------------------------------------------------


def shard_paths(path: Path) -> list[Path]:
    """Every shard of a split model (`NAME-00001-of-00003.gguf`, ...) given any one; else [path]."""
    match = SPLIT_NAME.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    paths = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise LlmctlError(
            f"split model {path.name}: {len(missing)} of its {count} shards are missing:"
            f" {', '.join(missing)}",
            hint="Download every shard into the same directory.",
        )
    return paths


def _open(path: Path) -> GgufHeader:
    if not path.is_file():
        raise LlmctlError(f"model file {path} does not exist", exit_code=ExitCode.USAGE)
    try:
        header = read_header(path)
    except GgufError as exc:
        raise LlmctlError(
            f"{path} is not a readable GGUF model (truncated or corrupt): {exc}",
            hint="Download it again; `ls -l` against the published size shows a partial download.",
        ) from None
    except (OSError, ValueError) as exc:  # mmap of an empty or special file raises ValueError
        raise LlmctlError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return header


def _value(header: GgufHeader, key: str) -> Any:
    return header.get(key)


def _per_layer(value: Any, layers: int, key: str, path: Path) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != layers:
            raise LlmctlError(f"{path}: {key} lists {len(value)} values for {layers} layers")
        return tuple(int(v) for v in value)
    return (int(value),) * layers


def read_gguf(path: Path) -> GgufInfo:
    """The header facts of a GGUF model; LlmctlError when it is missing, truncated or corrupt."""
    path = Path(path).expanduser()
    files = shard_paths(path)
    readers = [_open(p) for p in files]
    first = readers[0]
    arch = _value(first, "general.architecture")
    if not isinstance(arch, str):
        raise LlmctlError(f"{path}: the header has no general.architecture (not a model file?)")

    def need(suffix: str) -> Any:
        value = _value(first, f"{arch}.{suffix}")
        if value is None:
            raise LlmctlError(f"{path}: the header has no {arch}.{suffix}")
        return value

    layers = int(need("block_count"))
    embedding = int(need("embedding_length"))
    heads = _per_layer(need("attention.head_count"), layers, "attention.head_count", path)
    kv_raw = _value(first, f"{arch}.attention.head_count_kv")
    kv_heads = heads if kv_raw is None else _per_layer(kv_raw, layers, "attention.head_count_kv", path)
    max_heads = max(heads, default=1) or 1
    key_length = int(_value(first, f"{arch}.attention.key_length") or embedding // max_heads)
    value_length = int(_value(first, f"{arch}.attention.value_length") or embedding // max_heads)
    ff_raw = _value(first, f"{arch}.feed_forward_length")
    feed_forward = max(ff_raw) if isinstance(ff_raw, list) else int(ff_raw or 4 * embedding)
    vocab = _value(first, f"{arch}.vocab_size")
    if vocab is None:
        tokens = first.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if tokens is not None else 0  # counted, never decoded (150k strings)
    window = _value(first, f"{arch}.attention.sliding_window")

    layer_bytes = [0] * layers
    input_bytes = output_bytes = other_bytes = token_embd = 0
    has_output = False
    for reader in readers:
        for tensor in reader.tensors:
            name, size = tensor.name, tensor.n_bytes
            if name.startswith("blk."):
                index = int(name.split(".", 2)[1])
                if 0 <= index < layers:
                    layer_bytes[index] += size
                    continue
                other_bytes += size
            elif name.startswith(("token_embd.", "token_embd_norm.", "position_embd.", "token_types.")):
                input_bytes += size
                if name == "token_embd.weight":
                    token_embd = size
            elif name.startswith(("output.", "output_norm.")):
                output_bytes += size
                has_output = has_output or name == "output.weight"
            else:
                other_bytes += size
    return GgufInfo(
        files=tuple(files),
        architecture=arch,
        layers=layers,
        embedding=embedding,
        feed_forward=feed_forward,
        heads=heads,
        kv_heads=kv_heads,
        key_length=key_length,
        value_length=value_length,
        context_length=int(_value(first, f"{arch}.context_length") or 0),
        vocab=int(vocab),
        layer_bytes=tuple(layer_bytes),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        other_bytes=other_bytes,
        token_embd_bytes=token_embd,
        tied_output=not has_output,
        sliding_window=int(window) if isinstance(window, int) and window > 0 else None,
    )


# --- the estimates -------------------------------------------------------------------------------


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
) -> Estimate:
    """What llama.cpp will allocate for this model (see the module docstring for the formula).

    `context` is llama.cpp's -c (all slots together); `parallel` the number of sequences (-np);
    `kv_unified` whether they share one KV stream (llama-server's default with -np auto; an
    explicit -np N gives N streams of context/N). `cpu_only`: the backend sees no GPU.
    """
    info = path if isinstance(path, GgufInfo) else read_gguf(path)
    if context < 1 or parallel < 1 or ubatch < 1:
        raise ValueError("context, parallel and ubatch must be positive")
    notes: list[str] = []
    offloaded = 0 if cpu_only else max(0, min(gpu_layers, info.layers + 1))
    first_gpu_layer = info.layers - min(offloaded, info.layers)
    weights_gpu, weights_cpu = _weights(info, offloaded)

    type_v = kv_cache_type_v or kv_cache_type
    if kv_unified:
        cells_per_stream = _pad(context, KV_CELL_PAD)
        cells = cells_per_stream
    else:
        cells_per_stream = _pad(-(-context // parallel), KV_CELL_PAD)
        cells = cells_per_stream * parallel
    kv_layers = _kv_per_layer(info, cells, kv_cache_type, type_v)
    if info.sliding_window:
        notes.append(
            f"sliding-window attention ({info.sliding_window} tokens) is not modelled:"
            " the KV figure is an upper bound"
        )
    if not flash_attention and type_v not in ("f32", "f16", "bf16"):
        notes.append("llama.cpp needs flash attention for a quantised V cache")

    compute = _compute(
        info, context, cells_per_stream, parallel=parallel, flash_attention=flash_attention, ubatch=ubatch
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
    return Estimate(
        method="gguf",
        weights_gpu=weights_gpu,
        weights_cpu=weights_cpu,
        kv_gpu=sum(kv_layers[first_gpu_layer:]),
        kv_cpu=sum(kv_layers[:first_gpu_layer]),
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
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


def _kv_per_layer(info: GgufInfo, cells: int, type_k: str, type_v: str) -> list[int]:
    k_block, k_elems = kv_bytes_per_element(type_k)
    v_block, v_elems = kv_bytes_per_element(type_v)
    out = []
    for kv_heads in info.kv_heads:
        k_row = -(-kv_heads * info.key_length * k_block // k_elems)
        v_row = -(-kv_heads * info.value_length * v_block // v_elems)
        out.append(cells * (k_row + v_row))
    return out


def _compute(
    info: GgufInfo, context: int, cells_per_stream: int, *, parallel: int, flash_attention: bool, ubatch: int
) -> int:
    """The graph allocator's peak for one micro-batch (calibrated; see the module docstring)."""
    tokens = min(ubatch, context)
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
    logits = parallel * info.vocab * 4  # the worst-case graph computes one output row per sequence
    return mask + max(attention, ffn * row) + logits


def estimate_vllm(total_bytes: int, utilization: float) -> Estimate:
    """One GPU's claim by a vLLM instance: ceil(utilization x total), whatever the model."""
    return Estimate(
        method="vllm",
        claim_gpu=math.ceil(total_bytes * utilization),
        notes=(f"vLLM takes gpu_memory_utilization ({utilization:g}) x total of each GPU it uses",),
    )


def estimate_ollama(reported: LoadedModel | None, gguf: Estimate | None) -> Estimate:
    """Ollama's own figure for a loaded model (/api/ps), else the GGUF estimate."""
    if reported is not None:
        return Estimate(
            method="ollama-ps",
            claim_gpu=reported.size_vram,
            weights_cpu=max(reported.size - reported.size_vram, 0),
            notes=("as Ollama reports it (/api/ps size_vram)",),
        )
    if gguf is None:
        raise ValueError("estimate_ollama needs the /api/ps report or a GGUF estimate")
    return gguf


# --- from the config -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchShape:
    """The llama.cpp settings a backend's launch implies (flags llmctl passes, then `args:`)."""

    context: int
    gpu_layers: int
    kv_cache_type: str = "f16"
    kv_cache_type_v: str | None = None
    parallel: int = 1
    kv_unified: bool = True
    flash_attention: bool = True
    ubatch: int = DEFAULT_UBATCH
    cpu_only: bool = False


def _flag(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of `names` in argv (`--flag value` or `--flag=value`)."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def _int_flag(args: Sequence[str], default: int, *names: str) -> int:
    value = _flag(args, *names)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def launch_shape(backend: AnyBackend, model: Model) -> LaunchShape:
    """What llama.cpp will be asked for: the adapters' flags, overridden by the backend's `args`."""
    from llmctl.backends.base import default_gpu_layers  # noqa: PLC0415
    from llmctl.config.schema import Kind  # noqa: PLC0415

    args = list(backend.args)
    cpu_only = backend.gpus == []
    layers = default_gpu_layers(backend, model)
    if backend.kind == Kind.LLAMA_CPP_PYTHON:
        # Its flags are pydantic settings: --n_ctx, --n_gpu_layers, --type_k (a ggml type number),
        # --flash_attn (off by default in llama-cpp-python 0.3), one sequence.
        context = _int_flag(args, model.context or 4096, "--n_ctx")
        type_k = GGML_TYPE_NAMES.get(_int_flag(args, 1, "--type_k"), "f16")
        type_v = GGML_TYPE_NAMES.get(_int_flag(args, 1, "--type_v"), "f16")
        flash = (_flag(args, "--flash_attn") or "false").lower() in ("true", "1", "yes", "on")
        return LaunchShape(
            context=context,
            gpu_layers=_int_flag(args, layers, "--n_gpu_layers"),
            kv_cache_type=type_k,
            kv_cache_type_v=type_v,
            parallel=1,
            flash_attention=flash,
            ubatch=_int_flag(args, DEFAULT_UBATCH, "--n_ubatch"),
            cpu_only=cpu_only,
        )
    if backend.kind == Kind.OLLAMA:
        env: Mapping[str, str] = backend.environment
        parallel = _env_int(env, "OLLAMA_NUM_PARALLEL", 1)
        context = model.context or _env_int(env, "OLLAMA_CONTEXT_LENGTH", OLLAMA_DEFAULT_CONTEXT)
        flash = env.get("OLLAMA_FLASH_ATTENTION", "1").lower() not in ("0", "false", "off")
        kv_type = env.get("OLLAMA_KV_CACHE_TYPE", "f16").lower() or "f16"
        # Ollama sizes its runner's context as num_ctx x parallel.
        return LaunchShape(
            context=context * parallel,
            gpu_layers=model.gpu_layers if model.gpu_layers is not None else (0 if cpu_only else 999),
            kv_cache_type=kv_type if kv_type in KV_TYPES else "f16",
            parallel=parallel,
            flash_attention=flash,
            cpu_only=cpu_only,
        )
    # llama-server: --ctx-size and --n-gpu-layers from the model, the rest from `args`.
    parallel_flag = _flag(args, "-np", "--parallel")
    explicit = parallel_flag is not None and parallel_flag.strip() not in ("-1", "")
    parallel = _int_flag(args, LLAMA_SERVER_AUTO_PARALLEL, "-np", "--parallel") if explicit else 4
    unified = not explicit or "-kvu" in args or "--kv-unified" in args
    if "-no-kvu" in args or "--no-kv-unified" in args:
        unified = False
    fa = (_flag(args, "-fa", "--flash-attn") or "auto").lower()
    type_k = (_flag(args, "-ctk", "--cache-type-k") or "f16").lower()
    type_v = (_flag(args, "-ctv", "--cache-type-v") or "f16").lower()
    return LaunchShape(
        context=model.context or 4096,
        gpu_layers=layers,
        kv_cache_type=type_k,
        kv_cache_type_v=type_v,
        parallel=max(parallel, 1),
        kv_unified=unified,
        flash_attention=fa not in ("off", "0", "false"),
        ubatch=_int_flag(args, DEFAULT_UBATCH, "-ub", "--ubatch-size"),
        cpu_only=cpu_only,
    )


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def ollama_models_dir(backend: AnyBackend) -> Path:
    configured = getattr(backend, "models_dir", None) or backend.environment.get("OLLAMA_MODELS")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def ollama_blob(models_dir: Path, tag: str) -> Path | None:
    """The GGUF blob an Ollama tag points to (its manifest's model layer), if it is pulled."""
    import json  # noqa: PLC0415

    name, _, version = tag.partition(":")
    if "@" in name:
        return None
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    manifest = models_dir.joinpath("manifests", *parts, version or "latest")
    try:
        layers = json.loads(manifest.read_text()).get("layers", [])
    except (OSError, ValueError, AttributeError):
        return None
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == "application/vnd.ollama.image.model":
            digest = str(layer.get("digest", ""))
            blob = models_dir / "blobs" / digest.replace(":", "-")
            return blob if blob.is_file() else None
    return None


def estimate_model(
    config: Config,
    model_id: str,
    backend_name: str,
    *,
    gpu_totals: Sequence[int] = (),
    ollama_loaded: Sequence[LoadedModel] = (),
    cpu_only: bool | None = None,
) -> Estimate:
    """The estimate for serving `model_id` on `backend_name`, as the config would launch it.

    Reads the model's GGUF header (the only I/O). vLLM's claim needs the GPUs' totals; Ollama's
    report is used when the model is among `ollama_loaded`. `cpu_only` overrides the backend's
    `gpus: []` (True: plan for CPU because there is no GPU).
    """
    from llmctl.config.checks import classify_source  # noqa: PLC0415
    from llmctl.config.schema import Kind, VllmBackend  # noqa: PLC0415

    backend = config.backends[backend_name]
    model = config.models[model_id]
    assert model.source is not None
    if isinstance(backend, VllmBackend):
        if backend.gpus == [] or not gpu_totals or cpu_only:
            return Estimate(method="vllm", notes=("vLLM without a GPU: its claim applies to GPUs only",))
        count = backend.tensor_parallel_size or 1
        claims = [
            estimate_vllm(total, backend.gpu_memory_utilization).claim_gpu for total in gpu_totals[:count]
        ]
        return Estimate(
            method="vllm",
            claim_gpu=sum(claims),
            context=model.context,
            notes=(
                f"vLLM takes gpu_memory_utilization ({backend.gpu_memory_utilization:g}) x total of each GPU",
            ),
        )
    shape = launch_shape(backend, model)
    if cpu_only is not None:
        shape = replace(shape, cpu_only=cpu_only)
    if backend.kind == Kind.OLLAMA:
        for loaded in ollama_loaded:
            if _ollama_name(loaded.name) in (_ollama_name(model.source), _ollama_name(model_id)):
                return estimate_ollama(loaded, None)
        kind = classify_source(model.source)
        path = (
            Path(model.source).expanduser()
            if kind == "gguf"
            else ollama_blob(ollama_models_dir(backend), model.source)
        )
        if path is None:
            raise LlmctlError(
                f"cannot estimate {model_id}: Ollama model {model.source!r} is not pulled"
                f" in {ollama_models_dir(backend)}",
                hint=f"Pull it first (ollama pull {model.source}), or load it and plan again.",
            )
    else:
        path = Path(model.source).expanduser()
    return estimate_gguf(
        path,
        context=shape.context,
        gpu_layers=shape.gpu_layers,
        kv_cache_type=shape.kv_cache_type,
        kv_cache_type_v=shape.kv_cache_type_v,
        parallel=shape.parallel,
        kv_unified=shape.kv_unified,
        flash_attention=shape.flash_attention,
        ubatch=shape.ubatch,
        cpu_only=shape.cpu_only,
    )


def _ollama_name(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return (name if ":" in last else f"{name}:latest").casefold()
