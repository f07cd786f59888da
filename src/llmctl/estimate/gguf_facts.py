"""What a GGUF model's header says, reduced to the facts the memory formula needs.

The header is read by `llmctl.gguf_header` (metadata and tensor table only, through mmap, so a
40 GB model costs a few milliseconds); this module finds every shard of a split model, turns a
missing, truncated or corrupt file into an LlmctlError that says which, and sums tensor bytes by
where llama.cpp places them (per layer, input, output, other).

Metadata keys read ({arch} = general.architecture): {arch}.block_count, .embedding_length,
.feed_forward_length, .context_length, .attention.head_count, .attention.head_count_kv,
.attention.key_length and .value_length (default embedding_length / head_count), .vocab_size or
the length of tokenizer.ggml.tokens, .attention.sliding_window (only to say the KV is an upper
bound), split.count (shards named NAME-0000i-of-0000N.gguf are read and summed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import ExitCode, LlmctlError
from llmctl.gguf_header import GgufError, GgufHeader, read_header

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


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
