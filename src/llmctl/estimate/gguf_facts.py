"""What a GGUF model's header says, reduced to the facts the memory formula needs.

The header is read by `llmctl.gguf_header` (metadata and tensor table only, through mmap, so a
40 GB model costs a few milliseconds); this module finds every shard of a split model, turns a
missing, truncated or corrupt file into an LlmctlError that says which, and sums tensor bytes by
where llama.cpp places them (per layer, input, output, other).

Metadata keys read ({arch} = general.architecture): {arch}.block_count, .embedding_length,
.feed_forward_length, .context_length, .attention.head_count, .attention.head_count_kv,
.attention.key_length and .value_length (default embedding_length / head_count), .vocab_size or
the length of tokenizer.ggml.tokens, .attention.sliding_window and .attention.sliding_window_pattern
(which layers attend through the window: the header's pattern, else the architecture's own, as
llama.cpp's loader sets it), split.count (shards named NAME-0000i-of-0000N.gguf are read and summed).

Each weight's type and shape also say whether llama.cpp's CPU backend repacks it (see `REPACK_ROWS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gguf_header import GgufError, GgufHeader, read_header

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

# Every n-th layer attends to the whole context, the others through the sliding window, for the
# architectures whose loader says so without a pattern key (llama.cpp's load_swa_pattern(ml, n)
# in src/models/<arch>.cpp, layer i windowed when i % n < n - 1). A model of another architecture
# with a sliding window is costed as if every layer were full (an upper bound, and said so).
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2, "exaone4": 4, "olmo2": 4, "plamo3": 8}

# The weights llama.cpp's CPU backend repacks into its CPU_REPACK buffer (ggml-cpu/repack.cpp,
# ggml_repack_get_optimal_repack_type) on x86-64 with AVX2, as the builds here are made: ggml type
# -> the row count a matrix must be a multiple of. Only matrix-multiplication weights (2-D, or 3-D
# experts) qualify; token_embd is read by row (GET_ROWS) and stays as it is. AVX-512 adds Q2_K, and
# ARM repacks other types (Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL, Q8_0 with dotprod): not modelled.
REPACK_ROWS = {2: 8, 12: 8, 20: 8, 39: 8}  # Q4_0, Q4_K, IQ4_NL, MXFP4


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
    # Per layer: True when it attends through the sliding window (all False without one, or for
    # an architecture whose pattern is not known: then `swa_pattern_known` is False).
    swa_layers: tuple[bool, ...] = ()
    swa_pattern_known: bool = True
    # Bytes the CPU backend repacks (REPACK_ROWS), per layer and for the output matrix (a tied
    # output is a second tensor, repacked on its own when its type qualifies).
    layer_repack_bytes: tuple[int, ...] = ()
    output_repack_bytes: int = 0

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes + self.other_bytes


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


def _repacked(shape: tuple[int, ...], ggml_type: int) -> bool:
    rows = REPACK_ROWS.get(ggml_type)
    return rows is not None and len(shape) in (2, 3) and shape[1] % rows == 0


def _swa_layers(first: GgufHeader, arch: str, layers: int, window: Any) -> tuple[tuple[bool, ...], bool]:
    """Which layers use the sliding window, and whether that is known (see SWA_PATTERN)."""
    if not isinstance(window, int) or window <= 0:
        return (False,) * layers, True
    pattern = _value(first, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) >= layers:
        return tuple(bool(v) for v in pattern[:layers]), True
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        every = pattern
    elif arch in SWA_PATTERN:
        every = SWA_PATTERN[arch]
    else:
        return (False,) * layers, False
    # n = 0 windows every layer (llama.cpp's set_swa_pattern).
    return tuple(every == 0 or i % every < every - 1 for i in range(layers)), True


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

    sums = _sum_tensors(readers, layers)
    swa_layers, swa_known = _swa_layers(first, arch, layers, window)
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
        sliding_window=int(window) if isinstance(window, int) and window > 0 else None,
        swa_layers=swa_layers,
        swa_pattern_known=swa_known,
        **sums,
    )


def _sum_tensors(readers: list[GgufHeader], layers: int) -> dict[str, Any]:
    """Tensor bytes by where llama.cpp places them, and what the CPU backend repacks of each."""
    layer_bytes = [0] * layers
    layer_repack = [0] * layers
    input_bytes = output_bytes = other_bytes = token_embd = output_repack = embd_repack = 0
    has_output = False
    for reader in readers:
        for tensor in reader.tensors:
            name, size = tensor.name, tensor.n_bytes
            repacked = _repacked(tensor.shape, tensor.ggml_type)
            if name.startswith("blk."):
                index = int(name.split(".", 2)[1])
                if 0 <= index < layers:
                    layer_bytes[index] += size
                    layer_repack[index] += size if repacked and name.endswith(".weight") else 0
                    continue
                other_bytes += size
            elif name.startswith(("token_embd.", "token_embd_norm.", "position_embd.", "token_types.")):
                input_bytes += size
                if name == "token_embd.weight":
                    token_embd = size
                    embd_repack = size if repacked else 0
            elif name.startswith(("output.", "output_norm.")):
                output_bytes += size
                has_output = has_output or name == "output.weight"
                output_repack += size if repacked and name == "output.weight" else 0
            else:
                other_bytes += size
    return {
        "layer_bytes": tuple(layer_bytes),
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "other_bytes": other_bytes,
        "token_embd_bytes": token_embd,
        "tied_output": not has_output,
        "layer_repack_bytes": tuple(layer_repack),
        "output_repack_bytes": output_repack if has_output else embd_repack,
    }
