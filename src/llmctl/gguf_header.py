"""Reading a GGUF file's header (metadata and tensor table) with the standard library only.

The memory estimate and `switch`'s model check need a few dozen header values and the size of
every tensor. The `gguf` package can read them too, but importing it loads numpy (~70 ms here)
and its reader builds a numpy view of every tensor: together about 0.15 s on the switch path
for a 2 MB model. This reader walks the header through `mmap` and `struct` and touches nothing
past the tensor table, so a 40 GB model costs the same as a small one. The tests check it
against the `gguf` package on every shape and quantisation type they generate.

Format (GGUF v2/v3, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic "GGUF",
version u32, tensor count u64, metadata count u64, then the metadata key/value pairs, then one
entry per tensor (name, dimensions, ggml type, offset into the data section), then the data,
aligned to `general.alignment` (default 32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Numeric arrays longer than this (tokenizer scores, token types) are skipped, not decoded:
# the estimate needs only per-layer arrays, which are a few hundred entries at most.
MAX_DECODED_ARRAY = 65536

# ggml type id -> (elements per block, bytes per block): ggml's type traits.
GGML_BLOCK = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip

# GGUF metadata value types -> struct format (8 = string and 9 = array are handled apart).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GgufError(ValueError):
    """The file is not a GGUF model this reader understands (wrong magic, truncated, corrupt)."""


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array left undecoded (strings, or too long to matter): its type and length."""

    item_type: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data_offset: int  # absolute, in the file
    n_bytes: int


@dataclass(frozen=True)
class GgufHeader:
    version: int
    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    file_size: int

    def get(self, key: str) -> Any:
        return self.fields.get(key)


class _Cursor:
    def __init__(self, data: mmap.mmap | bytes, order: str) -> None:
        self.data = data
        self.order = order
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        spec = struct.Struct(self.order + fmt)
        if self.pos + spec.size > len(self.data):
            raise GgufError(f"the file ends inside the header (at byte {self.pos:,})")
        (value,) = spec.unpack_from(self.data, self.pos)
        self.pos += spec.size
        return value

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > len(self.data):
            raise GgufError(f"the file ends inside the header (at byte {self.pos:,})")
        self.pos += count

    def string(self) -> str:
        length = self.unpack("Q")
        start = self.pos
        self.skip(length)
        try:
            return bytes(self.data[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise GgufError(f"a string at byte {start:,} is not UTF-8") from None

    def value(self, value_type: int) -> Any:
        if value_type in _SCALAR:
            return self.unpack(_SCALAR[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            return self.array()
        raise GgufError(f"unknown metadata value type {value_type} at byte {self.pos:,}")

    def array(self) -> list[Any] | ArrayInfo:
        item_type = self.unpack("I")
        count = self.unpack("Q")
        if count > len(self.data) - self.pos:  # every item takes at least one byte
            raise GgufError(f"an array claims {count:,} items, more than the file holds")
        if item_type in _SCALAR:
            fmt = _SCALAR[item_type]
            size = struct.calcsize(fmt)
            if count > MAX_DECODED_ARRAY:
                self.skip(count * size)
                return ArrayInfo(item_type, count)
            spec = struct.Struct(f"{self.order}{count}{fmt}")
            if self.pos + spec.size > len(self.data):
                raise GgufError(f"the file ends inside the header (at byte {self.pos:,})")
            items = list(spec.unpack_from(self.data, self.pos))
            self.pos += spec.size
            return items
        if item_type == _STRING:
            # Token lists run to 150k strings: step over them without decoding any.
            length = struct.Struct(self.order + "Q")
            for _ in range(count):
                if self.pos + 8 > len(self.data):
                    raise GgufError(f"the file ends inside the header (at byte {self.pos:,})")
                (n,) = length.unpack_from(self.data, self.pos)
                self.skip(8 + n)
            return ArrayInfo(item_type, count)
        if item_type == _ARRAY:
            for _ in range(count):
                self.array()
            return ArrayInfo(item_type, count)
        raise GgufError(f"unknown array item type {item_type} at byte {self.pos:,}")


def read_header(path: Path) -> GgufHeader:
    """The header of the GGUF file at `path`; GgufError when it is not one, OSError when unreadable."""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        if size < 24:
            raise GgufError(f"the file is {size} bytes, too short for a GGUF header")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(data, size)


def _parse(data: mmap.mmap, size: int) -> GgufHeader:
    if data[:4] != MAGIC:
        raise GgufError(f"no GGUF magic (the file starts with {bytes(data[:4])!r})")
    # The version's byte order tells the file's: a big-endian file reads as version << 24.
    (version,) = struct.unpack_from("<I", data, 4)
    order = "<"
    if version & 0xFFFF == 0:
        order = ">"
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in (2, 3):
        raise GgufError(f"GGUF version {version} is not supported (2 and 3 are)")
    cursor = _Cursor(data, order)
    cursor.pos = 8
    tensor_count = cursor.unpack("Q")
    field_count = cursor.unpack("Q")
    if tensor_count > size or field_count > size:
        raise GgufError(f"the header claims {tensor_count:,} tensors and {field_count:,} fields")
    fields: dict[str, Any] = {}
    for _ in range(field_count):
        key = cursor.string()
        fields[key] = cursor.value(cursor.unpack("I"))
    raw = []
    for _ in range(tensor_count):
        name = cursor.string()
        n_dims = cursor.unpack("I")
        if n_dims > MAX_DIMS:
            raise GgufError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cursor.unpack("Q") for _ in range(n_dims))
        raw.append((name, shape, cursor.unpack("I"), cursor.unpack("Q")))
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GgufError(f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-cursor.pos // alignment) * alignment
    tensors = tuple(
        TensorInfo(name, shape, ggml_type, data_start + offset, _tensor_bytes(name, shape, ggml_type))
        for name, shape, ggml_type, offset in raw
    )
    end = max((t.data_offset + t.n_bytes for t in tensors), default=cursor.pos)
    if end > size:
        raise GgufError(f"the file is truncated: its tensors end at byte {end:,}, the file has {size:,}")
    return GgufHeader(version=version, fields=fields, tensors=tensors, file_size=size)


def _tensor_bytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    if ggml_type not in GGML_BLOCK:
        raise GgufError(f"tensor {name!r} has ggml type {ggml_type}, which this llmctl does not know")
    block, block_bytes = GGML_BLOCK[ggml_type]
    elements = 1
    for dim in shape:
        elements *= dim
    if elements % block:
        raise GgufError(f"tensor {name!r}: {elements} elements do not fill blocks of {block}")
    return elements // block * block_bytes
