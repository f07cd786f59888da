"""Tiny real GGUF models for the estimate tests (written by write_smoke_model), the textbook KV
size to compare with, and a config written and loaded from a dict."""

from __future__ import annotations

from pathlib import Path

import gguf

from llmctl.config.load import load_config
from llmctl.config.schema import Config
from llmctl.smoke_model import TOKENS, SmokeShape, write_smoke_model
from tests.conftest import write_config

VOCAB = len(TOKENS)
GQA = SmokeShape(
    layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=768, context=4096, weight_type="f16"
)


def model(directory: Path, shape: SmokeShape, name: str = "m.gguf") -> Path:
    return write_smoke_model(directory / name, shape)


def tensor_bytes(path: Path) -> dict[str, int]:
    return {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}


def kv_formula(shape: SmokeShape, cells: int, bytes_per_elem: float = 2.0) -> int:
    """2 x layers x cells x kv_heads x head_dim x bytes: the textbook KV size."""
    return int(2 * shape.layers * cells * shape.kv_heads * shape.head_size * bytes_per_elem)


def make_config(tmp_path: Path, backends: dict[str, object], models_: dict[str, object]) -> Config:
    path = write_config(tmp_path / "c.yaml", {"version": 1, "backends": backends, "models": models_})
    return load_config(path).config
