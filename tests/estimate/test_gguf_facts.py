"""The header facts of real (tiny) GGUF files written by write_smoke_model: tensor bytes, shards,
files that are cut short or not GGUF at all."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from llmctl.errors import LlmctlError
from llmctl.estimate import (
    estimate_gguf,
    read_gguf,
)
from llmctl.smoke_model import SmokeShape, _add_metadata, _add_tensors
from tests.estimate.fakes import GQA, VOCAB, model


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
