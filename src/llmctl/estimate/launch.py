"""What llama.cpp will be asked for when a backend launches a model: the flags llmctl's adapters
pass, overridden by the backend's own `args:` (the last occurrence of a flag wins), or for Ollama
its environment. The GGUF estimate is only as right as this reading of the launch.

The config schema (pydantic, ~0.13 s to import) is imported inside the function that needs it,
never at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmctl.estimate.formula import DEFAULT_UBATCH, KV_TYPES

if TYPE_CHECKING:
    from llmctl.config.schema import AnyBackend, Model

LLAMA_SERVER_AUTO_PARALLEL = 4  # llama-server -np -1 (auto): 4 slots over one unified KV stream
OLLAMA_DEFAULT_CONTEXT = 4096
# llama-cpp-python's --type_k/--type_v take ggml type numbers.
GGML_TYPE_NAMES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    6: "q5_0",
    7: "q5_1",
    8: "q8_0",
    20: "iq4_nl",
    30: "bf16",
}


@dataclass(frozen=True)
class LaunchShape:
    """The llama.cpp settings a backend's launch implies (flags llmctl passes, then `args:`)."""

    context: int
    gpu_layers: int
    kv_cache_type: str = "f16"
    kv_cache_type_v: str | None = None
    parallel: int = 1
    kv_unified: bool = True
    flash_attention: bool = True
    ubatch: int = DEFAULT_UBATCH
    cpu_only: bool = False
    swa_full: bool = False  # a full-size cache for the sliding-window layers too
    outputs: int | None = None  # logit rows per micro-batch at most (None: one per sequence)


def _flag(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of `names` in argv (`--flag value` or `--flag=value`)."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def _int_flag(args: Sequence[str], default: int, *names: str) -> int:
    value = _flag(args, *names)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def launch_shape(backend: AnyBackend, model: Model) -> LaunchShape:
    """What llama.cpp will be asked for: the adapters' flags, overridden by the backend's `args`."""
    from llmctl.backends.base import default_gpu_layers  # noqa: PLC0415
    from llmctl.config.schema import Kind  # noqa: PLC0415

    args = list(backend.args)
    cpu_only = backend.gpus == []
    layers = default_gpu_layers(backend, model)
    if backend.kind == Kind.LLAMA_CPP_PYTHON:
        # Its flags are pydantic settings: --n_ctx, --n_gpu_layers, --type_k (a ggml type number),
        # --flash_attn (off by default in llama-cpp-python 0.3), one sequence. Two defaults of
        # its own cost memory: --logits_all true asks llama.cpp for every token's logits (its
        # graph and output buffer hold n_batch rows of n_vocab), and llama.cpp's C API default
        # swa_full gives the sliding-window layers a full-size cache.
        context = _int_flag(args, model.context or 4096, "--n_ctx")
        logits_all = (_flag(args, "--logits_all") or "true").lower() in ("true", "1", "yes", "on")
        batch = min(context, _int_flag(args, 512, "--n_batch"))
        type_k = GGML_TYPE_NAMES.get(_int_flag(args, 1, "--type_k"), "f16")
        type_v = GGML_TYPE_NAMES.get(_int_flag(args, 1, "--type_v"), "f16")
        flash = (_flag(args, "--flash_attn") or "false").lower() in ("true", "1", "yes", "on")
        return LaunchShape(
            context=context,
            gpu_layers=_int_flag(args, layers, "--n_gpu_layers"),
            kv_cache_type=type_k,
            kv_cache_type_v=type_v,
            parallel=1,
            flash_attention=flash,
            ubatch=min(batch, _int_flag(args, DEFAULT_UBATCH, "--n_ubatch")),
            cpu_only=cpu_only,
            swa_full=True,
            outputs=batch if logits_all else 1,
        )
    if backend.kind == Kind.OLLAMA:
        env: Mapping[str, str] = backend.environment
        parallel = _env_int(env, "OLLAMA_NUM_PARALLEL", 1)
        context = model.context or _env_int(env, "OLLAMA_CONTEXT_LENGTH", OLLAMA_DEFAULT_CONTEXT)
        flash = env.get("OLLAMA_FLASH_ATTENTION", "1").lower() not in ("0", "false", "off")
        kv_type = env.get("OLLAMA_KV_CACHE_TYPE", "f16").lower() or "f16"
        # Ollama sizes its runner's context as num_ctx x parallel.
        return LaunchShape(
            context=context * parallel,
            gpu_layers=model.gpu_layers if model.gpu_layers is not None else (0 if cpu_only else 999),
            kv_cache_type=kv_type if kv_type in KV_TYPES else "f16",
            parallel=parallel,
            flash_attention=flash,
            cpu_only=cpu_only,
        )
    # llama-server: --ctx-size and --n-gpu-layers from the model, the rest from `args`.
    parallel_flag = _flag(args, "-np", "--parallel")
    explicit = parallel_flag is not None and parallel_flag.strip() not in ("-1", "")
    parallel = _int_flag(args, LLAMA_SERVER_AUTO_PARALLEL, "-np", "--parallel") if explicit else 4
    unified = not explicit or "-kvu" in args or "--kv-unified" in args
    if "-no-kvu" in args or "--no-kv-unified" in args:
        unified = False
    fa = (_flag(args, "-fa", "--flash-attn") or "auto").lower()
    type_k = (_flag(args, "-ctk", "--cache-type-k") or "f16").lower()
    type_v = (_flag(args, "-ctv", "--cache-type-v") or "f16").lower()
    return LaunchShape(
        context=model.context or 4096,
        gpu_layers=layers,
        kv_cache_type=type_k,
        kv_cache_type_v=type_v,
        parallel=max(parallel, 1),
        kv_unified=unified,
        flash_attention=fa not in ("off", "0", "false"),
        ubatch=_int_flag(args, DEFAULT_UBATCH, "-ub", "--ubatch-size"),
        cpu_only=cpu_only,
        swa_full="--swa-full" in args,
    )


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default
