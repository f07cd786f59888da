"""The stdlib GGUF header reader against the `gguf` package's reader, the reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llmctl.gguf_header import GGML_BLOCK, ArrayInfo, GgufError, read_header
from llmctl.smoke_model import WEIGHT_TYPES, SmokeShape, write_smoke_model


def reference(path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int, int]]]:
    reader = gguf.GGUFReader(path, "r")
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own pseudo-fields (version, counts)
        value = field.contents()
        fields[key] = (
            len(value) if isinstance(value, list) and field.types[-1] == gguf.GGUFValueType.STRING else value
        )
    tensors = [
        (t.name, tuple(int(d) for d in t.shape.tolist()), int(t.tensor_type), int(t.data_offset),
         int(t.n_bytes))
        for t in reader.tensors
    ]  # fmt: skip
    return fields, tensors


def ours(path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int, int]]]:
    header = read_header(path)
    fields = {k: (len(v) if isinstance(v, ArrayInfo) else v) for k, v in header.fields.items()}
    tensors = [(t.name, t.shape, t.ggml_type, t.data_offset, t.n_bytes) for t in header.tensors]
    return fields, tensors


def approx(fields: dict[str, Any]) -> dict[str, Any]:
    """float32 values: gguf gives numpy's float32 widened, struct gives the same double."""
    return {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in fields.items()}


@pytest.mark.parametrize("weight_type", WEIGHT_TYPES)
@pytest.mark.parametrize(
    "shape",
    [
        SmokeShape(),
        SmokeShape(layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=768),
        SmokeShape(layers=3, embedding=320, heads=5, kv_heads=1, feed_forward=1024),
    ],
    ids=["tiny", "gqa", "mqa"],
)
def test_smoke_models_read_the_same_as_the_gguf_package(
    tmp_path: Path, shape: SmokeShape, weight_type: str
) -> None:

    path = write_smoke_model(tmp_path / "m.gguf", replace(shape, weight_type=weight_type))
    ref_fields, ref_tensors = reference(path)
    our_fields, our_tensors = ours(path)
    assert our_tensors == ref_tensors
    assert our_fields == approx(ref_fields)
    assert our_fields["tokenizer.ggml.tokens"] == 259  # counted, not decoded


def test_every_value_type_and_quantisation_the_gguf_package_writes(tmp_path: Path) -> None:
    path = tmp_path / "all.gguf"
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.25)
    writer.add_uint64("t.u64", 2**63 + 5)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float64("t.f64", 1e-300)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo ✓")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.nested", [[1, 2], [3]])
    writer.add_array("t.strs", ["a", "bc", ""])
    rng = np.random.default_rng(0)
    for type_id, (block, block_bytes) in sorted(GGML_BLOCK.items()):
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            continue
        rows, cols = 2, block * 2
        raw = rng.integers(0, 255, size=(rows, cols // block * block_bytes), dtype=np.uint8)
        writer.add_tensor(f"t{type_id}", raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    header = read_header(path)
    assert header.get("t.u8") == 200
    assert header.get("t.i8") == -5
    assert header.get("t.u16") == 60000
    assert header.get("t.i16") == -30000
    assert header.get("t.u32") == 4_000_000_000
    assert header.get("t.i32") == -2_000_000_000
    assert header.get("t.f32") == 0.25
    assert header.get("t.u64") == 2**63 + 5
    assert header.get("t.i64") == -(2**62)
    assert header.get("t.f64") == 1e-300
    assert header.get("t.bool") is True
    assert header.get("t.str") == "héllo ✓"
    assert header.get("t.ints") == [1, 2, 3]
    assert len(header.get("t.nested")) == 2
    assert len(header.get("t.strs")) == 3
    assert ours(path)[1] == reference(path)[1]
    assert len(header.tensors) >= 30


def test_the_type_table_matches_the_gguf_package() -> None:
    assert {int(k): v for k, v in gguf.GGML_QUANT_SIZES.items()} == GGML_BLOCK


def test_a_long_numeric_array_is_skipped_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "long.gguf"
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_array("tokenizer.ggml.scores", [0.5] * 70000)
    writer.add_uint32("after", 7)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_header(path)
    assert header.get("tokenizer.ggml.scores") == ArrayInfo(item_type=6, count=70000)
    assert header.get("after") == 7  # the cursor stepped over the array exactly


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"GGML" + b[4:], "no GGUF magic"),
        (lambda b: b[:4] + (1).to_bytes(4, "little") + b[8:], "version 1 is not supported"),
        (lambda b: b[:40], "ends inside the header"),
        (lambda b: b[:8] + (2**40).to_bytes(8, "little") + b[16:], "claims"),
        (lambda b: b[:12], "too short"),
    ],
    ids=["magic", "version", "truncated", "absurd-count", "tiny"],
)
def test_corrupt_headers_are_refused_with_a_reason(tmp_path: Path, mutate: Any, message: str) -> None:
    good = write_smoke_model(tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(mutate(good))
    with pytest.raises(GgufError, match=message):
        read_header(bad)


def test_every_cut_short_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    good = write_smoke_model(tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / "cut.gguf"
    for cut in [*range(0, 9000, 7), *range(9000, len(good), 997), len(good) - 1]:
        bad.write_bytes(good[:cut])
        with pytest.raises(GgufError):
            read_header(bad)
