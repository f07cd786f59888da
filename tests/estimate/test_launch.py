"""The llama.cpp settings read from a backend's flags, args and environment."""

from __future__ import annotations

from pathlib import Path

from llmctl.estimate import (
    launch_shape,
)
from tests.estimate.fakes import GQA, make_config, model


def test_launch_shape_reads_the_flags_llmctl_passes_and_the_args(tmp_path: Path, models: Path) -> None:
    gguf_path = str(model(models, GQA))
    config = make_config(
        tmp_path,
        {
            "ls": {"kind": "llama-server", "command": "/bin/true", "port": 8081,
                   "args": ["-ctk", "q8_0", "--cache-type-v=q8_0", "-fa", "off", "-np", "2", "-ub", "256"]},
            "lcp": {"kind": "llama-cpp-python", "command": "/bin/true", "port": 8082, "gpus": [],
                    "args": ["--type_k", "8", "--flash_attn", "true"]},
            "ol": {"kind": "ollama", "command": "/bin/true", "port": 11434,
                   "environment": {"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_KV_CACHE_TYPE": "q4_0"}},
        },
        {
            "a": {"backend": "ls", "source": gguf_path, "context": 3000},
            "b": {"backend": "lcp", "source": gguf_path},
            "c": {"backend": "ol", "source": "tiny:q4"},
        },
    )  # fmt: skip
    c = config
    ls = launch_shape(c.backends["ls"], c.models["a"])
    assert (ls.context, ls.kv_cache_type, ls.kv_cache_type_v, ls.flash_attention) == (
        3000,
        "q8_0",
        "q8_0",
        False,
    )
    assert (ls.parallel, ls.kv_unified, ls.ubatch, ls.gpu_layers) == (2, False, 256, 999)
    lcp = launch_shape(c.backends["lcp"], c.models["b"])
    assert (lcp.context, lcp.kv_cache_type, lcp.flash_attention, lcp.cpu_only) == (4096, "q8_0", True, True)
    ol = launch_shape(c.backends["ol"], c.models["c"])
    assert (ol.context, ol.parallel, ol.kv_cache_type) == (8192, 2, "q4_0")  # num_ctx x parallel


def test_llama_cpp_python_asks_for_every_tokens_logits_and_a_full_window_cache(
    tmp_path: Path, models: Path
) -> None:
    gguf_path = str(model(models, GQA))
    config = make_config(
        tmp_path,
        {
            "lcp": {"kind": "llama-cpp-python", "command": "/bin/true", "port": 8082, "gpus": []},
            "lean": {"kind": "llama-cpp-python", "command": "/bin/true", "port": 8083, "gpus": [],
                     "args": ["--logits_all", "false", "--n_batch", "256"]},
            "ls": {"kind": "llama-server", "command": "/bin/true", "port": 8081, "args": ["--swa-full"]},
            "plain": {"kind": "llama-server", "command": "/bin/true", "port": 8084},
        },
        {
            "a": {"backend": "lcp", "source": gguf_path, "context": 2048},
            "b": {"backend": "lean", "source": gguf_path, "context": 2048},
            "c": {"backend": "ls", "source": gguf_path},
            "d": {"backend": "plain", "source": gguf_path},
        },
    )  # fmt: skip
    # Its server's --logits_all defaults to true: llama.cpp reserves a logit row per token of
    # the batch (512); llama.cpp's C API defaults to swa_full, which llama-cpp-python keeps.
    lcp = launch_shape(config.backends["lcp"], config.models["a"])
    assert (lcp.outputs, lcp.swa_full, lcp.ubatch) == (512, True, 512)
    lean = launch_shape(config.backends["lean"], config.models["b"])
    assert (lean.outputs, lean.ubatch) == (1, 256)
    assert launch_shape(config.backends["ls"], config.models["c"]).swa_full is True
    plain = launch_shape(config.backends["plain"], config.models["d"])
    assert (plain.swa_full, plain.outputs) == (False, None)
