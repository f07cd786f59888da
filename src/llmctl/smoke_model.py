"""A tiny llama GGUF with random weights, for smoke-testing llama.cpp servers.

The model loads in llama-server and llama-cpp-python in well under a second and answers chat
completions, but its weights are random: everything it generates is noise. It exists so that
tests and demos can start a real server without downloading a model.

``gguf`` and ``numpy`` are imported inside :func:`write_smoke_model` only, so that importing this
module (and starting the CLI) stays cheap; gguf is a dependency of llmctl.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gguf

WEIGHT_TYPES = ("f32", "f16", "q8_0", "q4_0")
QUANT_BLOCK = 32  # elements per block in Q8_0 and Q4_0: every row length must be a multiple
# <unk> <s> </s>, then one token per byte: SentencePiece byte fallback turns any text into these,
# so no real vocabulary is needed.
TOKENS = ("<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)))


@dataclass(frozen=True)
class SmokeShape:
    """Hyper-parameters of the smoke model. Invalid combinations raise ValueError at once."""

    layers: int = 2
    embedding: int = 64
    heads: int = 4
    kv_heads: int = 4
    feed_forward: int = 128
    context: int = 2048  # llama.context_length written to the header
    weight_type: str = "f32"  # "f32" | "f16" | "q8_0" | "q4_0"

    def __post_init__(self) -> None:
        def bad(why: str) -> ValueError:
            return ValueError(f"invalid smoke model shape {self}: {why}")

        for field in ("layers", "embedding", "heads", "kv_heads", "feed_forward", "context"):
            if getattr(self, field) < 1:
                raise bad(f"{field} must be at least 1")
        if self.weight_type not in WEIGHT_TYPES:
            raise bad(f"weight_type must be one of {', '.join(WEIGHT_TYPES)}")
        if self.embedding % self.heads or (self.embedding // self.heads) % 2:
            raise bad("embedding must be heads times an even head size")
        if self.heads % self.kv_heads:
            raise bad("heads must be a multiple of kv_heads")
        if self.weight_type in ("q8_0", "q4_0"):
            for field in ("embedding", "feed_forward"):
                if getattr(self, field) % QUANT_BLOCK:
                    raise bad(
                        f"{self.weight_type} stores each row in blocks of {QUANT_BLOCK} values,"
                        f" so {field} must be a multiple of {QUANT_BLOCK}"
                    )

    @property
    def head_size(self) -> int:
        return self.embedding // self.heads


def write_smoke_model(
    path: Path, shape: SmokeShape = SmokeShape(), *, seed: int = 0, name: str = "llmctl-smoke"
) -> Path:
    """Write a random-weight llama GGUF to ``path`` atomically and return ``path``.

    The same ``shape``, ``seed`` and ``name`` always give a byte-identical file. An existing file
    at ``path`` is replaced only once the new one is complete and synced to disk.
    """
    try:
        import gguf  # noqa: PLC0415 (lazy on purpose: the CLI must not load numpy at start-up)
    except ImportError as exc:
        raise ImportError(
            f"writing a smoke model needs the gguf package ({exc.name} is missing):"
            " reinstall llmctl (gguf is a dependency)"
        ) from exc

    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, arch="llama")
    try:
        _add_metadata(writer, shape, seed=seed, name=name)
        _add_tensors(writer, shape, seed=seed)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # The rename is durable only once the directory entry is.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _add_metadata(writer: gguf.GGUFWriter, shape: SmokeShape, *, seed: int, name: str) -> None:
    import gguf  # noqa: PLC0415

    writer.add_name(name)
    writer.add_description(
        f"Smoke-test model written by llmctl with random weights (seed {seed}): its output is"
        " noise. For checking that a server loads a model and answers; not a language model."
    )
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[shape.weight_type]
    writer.add_file_type(int(file_type))
    if shape.weight_type in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_size)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)

    writer.add_vocab_size(len(TOKENS))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * len(TOKENS))
    special = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    writer.add_token_types(special + [gguf.TokenType.BYTE] * (len(TOKENS) - len(special)))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)


def _add_tensors(writer: gguf.GGUFWriter, shape: SmokeShape, *, seed: int) -> None:
    import gguf  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[shape.weight_type.upper()]
    vocab = len(TOKENS)
    kv_width = shape.kv_heads * shape.head_size

    def matrix(tensor_name: str, rows: int, cols: int) -> None:
        # numpy shape (rows, cols) is ggml's [cols, rows]: cols is the (quantised) row length.
        data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        writer.add_tensor(tensor_name, gguf.quantize(data, qtype), raw_dtype=qtype)

    def norm(tensor_name: str) -> None:
        writer.add_tensor(tensor_name, np.ones(shape.embedding, dtype=np.float32))

    matrix("token_embd.weight", vocab, shape.embedding)
    for i in range(shape.layers):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", shape.embedding, shape.embedding)
        matrix(f"blk.{i}.attn_k.weight", kv_width, shape.embedding)
        matrix(f"blk.{i}.attn_v.weight", kv_width, shape.embedding)
        matrix(f"blk.{i}.attn_output.weight", shape.embedding, shape.embedding)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", shape.feed_forward, shape.embedding)
        matrix(f"blk.{i}.ffn_up.weight", shape.feed_forward, shape.embedding)
        matrix(f"blk.{i}.ffn_down.weight", shape.embedding, shape.feed_forward)
    norm("output_norm.weight")
    matrix("output.weight", vocab, shape.embedding)
