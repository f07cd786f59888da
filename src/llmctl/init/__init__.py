"""`llmctl init`: look at what this machine has and write a starter config for it.

Detection is bounded and quiet: executables on PATH and in the usual virtualenv places, GGUF
files in the usual model directories (a limited walk, files checked for the GGUF magic), the
models of an Ollama that answers on 127.0.0.1:11434 (a one-second timeout), GPUs through NVML.
Every source of facts is a parameter, so tests can describe any machine. Choosing is a pure
function of what was found; writing refuses to replace a config unless forced, and then
snapshots the old one first.

Modules: `detection` (what this machine has), `starter` (the starter config chosen from it, as
commented YAML), `demo` (the --demo config and its smoke model), `write` (writing either).
"""

from __future__ import annotations

from llmctl.init.demo import DEMO_PORT_BASE, demo_config, ensure_smoke_model
from llmctl.init.detection import (
    EXECUTABLE_NAMES,
    GGUF_MAGIC,
    KINDS,
    OLLAMA_TIMEOUT,
    OLLAMA_URL,
    SCAN_MAX_DEPTH,
    SCAN_MAX_ENTRIES,
    SCAN_MAX_FILES,
    Detection,
    FoundExecutable,
    GgufFile,
    GpuInfo,
    Sources,
    bin_dirs,
    detect,
    find_executables,
    gpu_inventory,
    model_dirs,
    ollama_models,
    python_has_module,
    scan_ggufs,
    venv_has_module,
)
from llmctl.init.starter import (
    BACKEND_NAMES,
    DEFAULT_CONTEXT,
    DEFAULT_PORTS,
    GPU_FIT,
    Choice,
    Plan,
    found_lines,
    model_id_for,
    pick_gguf,
    plan,
    render_plan,
)
from llmctl.init.write import WriteResult, check_valid, write_action, write_config

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_CONTEXT",
    "DEFAULT_PORTS",
    "DEMO_PORT_BASE",
    "EXECUTABLE_NAMES",
    "GGUF_MAGIC",
    "GPU_FIT",
    "KINDS",
    "OLLAMA_TIMEOUT",
    "OLLAMA_URL",
    "SCAN_MAX_DEPTH",
    "SCAN_MAX_ENTRIES",
    "SCAN_MAX_FILES",
    "Choice",
    "Detection",
    "FoundExecutable",
    "GgufFile",
    "GpuInfo",
    "Plan",
    "Sources",
    "WriteResult",
    "bin_dirs",
    "check_valid",
    "demo_config",
    "detect",
    "ensure_smoke_model",
    "find_executables",
    "found_lines",
    "gpu_inventory",
    "model_dirs",
    "model_id_for",
    "ollama_models",
    "pick_gguf",
    "plan",
    "python_has_module",
    "render_plan",
    "scan_ggufs",
    "venv_has_module",
    "write_action",
    "write_config",
]
