"""Tests for llmctl.smoke_model: the random-weight llama GGUF used by smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import pytest

from llmctl.smoke_model import SmokeShape, write_smoke_model


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A directory of its own (the shared conftest puts a fake HOME into tmp_path)."""
    directory = tmp_path / "models"
    directory.mkdir()
    return directory


def fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(out: Path) -> None:
    a = write_smoke_model(out / "a.gguf", seed=7)
    b = write_smoke_model(out / "b.gguf", seed=7)
    c = write_smoke_model(out / "c.gguf", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_header_describes_a_small_llama_with_a_byte_vocabulary(out: Path) -> None:
    path = write_smoke_model(out / "m.gguf", SmokeShape(context=4096), name="smoke-x")
    kv = fields(path)
    assert kv["general.architecture"] == "llama"
    assert kv["general.name"] == "smoke-x"
    assert "random weights" in kv["general.description"]
    assert "noise" in kv["general.description"]
    assert kv["llama.block_count"] == 2
    assert kv["llama.embedding_length"] == 64
    assert kv["llama.feed_forward_length"] == 128
    assert kv["llama.attention.head_count"] == 4
    assert kv["llama.attention.head_count_kv"] == 4
    assert kv["llama.rope.dimension_count"] == 16
    assert kv["llama.context_length"] == 4096
    assert kv["tokenizer.ggml.model"] == "llama"
    tokens = kv["tokenizer.ggml.tokens"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3:] == [f"<0x{b:02X}>" for b in range(256)]
    assert len(kv["tokenizer.ggml.scores"]) == len(tokens)
    token_types = kv["tokenizer.ggml.token_type"]
    unknown, control = gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL
    assert token_types[:3] == [unknown, control, control]
    assert set(token_types[3:]) == {gguf.TokenType.BYTE}
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)


def test_grouped_query_attention_shapes(out: Path) -> None:
    shape = SmokeShape(layers=3, embedding=128, heads=8, kv_heads=2, feed_forward=256)
    path = write_smoke_model(out / "gqa.gguf", shape)
    kv = fields(path)
    assert (kv["llama.block_count"], kv["llama.attention.head_count_kv"]) == (3, 2)
    shapes = {t.name: t.shape.tolist() for t in gguf.GGUFReader(path).tensors}
    # ggml order: [row length, rows]; K and V project to kv_heads * head_size = 2 * 16.
    assert shapes["blk.2.attn_k.weight"] == [128, 32]
    assert shapes["blk.2.ffn_down.weight"] == [256, 128]
    assert shapes["token_embd.weight"] == [128, 259]
    assert len(shapes) == 2 + 3 * 9 + 1


@pytest.mark.parametrize(
    ("weight_type", "ggml_type", "file_type"),
    [("f32", "F32", 0), ("f16", "F16", 1), ("q8_0", "Q8_0", 7), ("q4_0", "Q4_0", 2)],
)
def test_weight_types(out: Path, weight_type: str, ggml_type: str, file_type: int) -> None:
    path = write_smoke_model(out / "m.gguf", SmokeShape(weight_type=weight_type))
    types = tensor_types(path)
    norms = {name for name in types if name.endswith("norm.weight")}
    assert {types[name] for name in norms} == {"F32"}
    assert {types[name] for name in types.keys() - norms} == {ggml_type}
    assert fields(path)["general.file_type"] == file_type


def test_quantised_models_are_smaller(out: Path) -> None:
    sizes = {
        t: write_smoke_model(out / f"{t}.gguf", SmokeShape(weight_type=t)).stat().st_size
        for t in ("f32", "f16", "q8_0", "q4_0")
    }
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"] > sizes["q4_0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embedding": 48, "weight_type": "q4_0"}, "embedding must be a multiple of 32"),
        ({"feed_forward": 100, "weight_type": "q8_0"}, "feed_forward must be a multiple of 32"),
        ({"heads": 3}, "embedding must be heads times an even head size"),
        ({"embedding": 12, "heads": 4}, "even head size"),
        ({"kv_heads": 3}, "heads must be a multiple of kv_heads"),
        ({"layers": 0}, "layers must be at least 1"),
        ({"context": -1}, "context must be at least 1"),
        ({"weight_type": "q5_k"}, "weight_type must be one of f32, f16, q8_0, q4_0"),
    ],
)
def test_bad_shapes_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmokeShape(**kwargs)


def test_unquantised_shapes_need_no_multiple_of_32() -> None:
    SmokeShape(embedding=48, feed_forward=100)


def test_write_replaces_an_existing_file_and_leaves_no_temp_file(out: Path) -> None:
    path = out / "model.gguf"
    path.write_bytes(b"old")
    assert write_smoke_model(path) == path
    assert fields(path)["general.architecture"] == "llama"
    assert [p.name for p in out.iterdir()] == ["model.gguf"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail)
    path = out / "model.gguf"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        write_smoke_model(path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in out.iterdir()] == ["model.gguf"]


def test_missing_gguf_names_the_extra(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` raise ImportError
    with pytest.raises(ImportError, match=r"gguf is a dependency"):
        write_smoke_model(out / "m.gguf")
    assert list(out.iterdir()) == []


def test_importing_the_module_does_not_load_numpy_or_gguf() -> None:
    code = "import sys, llmctl.smoke_model; print(sorted({'numpy', 'gguf'} & set(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
