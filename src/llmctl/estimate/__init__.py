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

Modules: `result` (`Estimate`, what every way returns), `gguf_facts` (the header facts of a GGUF
model and its shards), `formula` (the GGUF formula, with how it was calibrated), `launch` (the
llama.cpp settings a backend's launch implies), `by_kind` (vLLM, Ollama, and `estimate_model`,
which picks the way for a configured model). Every name is re-exported here.
"""

from __future__ import annotations

from llmctl.estimate.by_kind import (
    estimate_model,
    estimate_ollama,
    estimate_vllm,
    ollama_blob,
    ollama_models_dir,
)
from llmctl.estimate.formula import (
    DEFAULT_UBATCH,
    KV_CELL_PAD,
    KV_TYPES,
    PROCESS_OVERHEAD,
    estimate_gguf,
    kv_bytes_per_element,
)
from llmctl.estimate.gguf_facts import SPLIT_NAME, GgufInfo, read_gguf, shard_paths
from llmctl.estimate.launch import (
    GGML_TYPE_NAMES,
    LLAMA_SERVER_AUTO_PARALLEL,
    OLLAMA_DEFAULT_CONTEXT,
    LaunchShape,
    launch_shape,
)
from llmctl.estimate.result import Estimate, GiB, Method, MiB

__all__ = [
    "DEFAULT_UBATCH",
    "GGML_TYPE_NAMES",
    "KV_CELL_PAD",
    "KV_TYPES",
    "LLAMA_SERVER_AUTO_PARALLEL",
    "OLLAMA_DEFAULT_CONTEXT",
    "PROCESS_OVERHEAD",
    "SPLIT_NAME",
    "Estimate",
    "GgufInfo",
    "GiB",
    "LaunchShape",
    "Method",
    "MiB",
    "estimate_gguf",
    "estimate_model",
    "estimate_ollama",
    "estimate_vllm",
    "kv_bytes_per_element",
    "launch_shape",
    "ollama_blob",
    "ollama_models_dir",
    "read_gguf",
    "shard_paths",
]
