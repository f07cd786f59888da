"""How close llmctl's GGUF memory estimate is to what llama.cpp itself allocates.

For each model shape, write a random-weight llama GGUF (llmctl.smoke_model) or an all-zero one
with Gemma 3's graph (the variants its compute terms were fitted on), and take the real Gemma 3
270M that scripts/provision fetches (a real architecture: sliding-window layers, Q4_K weights
the CPU repacks, a 262k vocabulary); start the real llama-server on each with -v on CPU
(-ngl 0: the "device" buffers are then CPU buffers), read the buffer sizes it logs, and compare
them with `llmctl.estimate.estimate_gguf`:

    weights   <- "CPU_Mapped model buffer size"
    repack    <- "CPU_REPACK model buffer size"   (weights repacked for the CPU's kernels)
    KV        <- "CPU KV buffer size"              (summed: a sliding-window model logs two caches)
    compute   <- "CPU compute buffer size"
    output    <- "CPU output buffer size"

llama-server logs one set of these while its --fit step probes the device memory and another
when it really loads: the last of each is taken. It logs MiB with two decimals, so a logged
figure is only good to +-0.005 MiB. The per-process GPU overhead (CUDA context, 512 MiB in the
estimate) does not exist on CPU and is not measured here.

Exits 1 when any component or total of any row is off by more than TARGET per cent (components
under 0.5 MiB are judged by their absolute error instead: 0.02 MiB).

Usage: bench/estimate_accuracy.py [--server PATH] [--real-model PATH] [--only real|smoke] [--keep DIR]
(the server defaults to $LLMCTL_TEST_LLAMA_SERVER, the real model to $LLMCTL_TEST_REAL_MODEL, both
from scripts/provision's provision.env)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmctl.estimate import MiB, estimate_gguf
from llmctl.smoke_model import SmokeShape, write_smoke_model

BUFFER = re.compile(
    r"\b(CPU_Mapped model|CPU model|CPU_REPACK model|CPU KV|CPU compute|CPU\s+output) buffer size"
    r" =\s*([0-9.]+) MiB"
)
READY = ("listening on http",)
TARGET = 3.0  # per cent, per component and in total
SMALL = 0.5  # MiB: below this a component is judged by its absolute error
SMALL_SLACK = 0.02  # MiB
PARTS = ("weights", "repack", "kv", "compute", "output")


@dataclass(frozen=True)
class Gemma3Shape:
    """A random-weight (all zero) model with Gemma 3's graph, for the compute terms' variants."""

    layers: int = 6
    embedding: int = 640
    feed_forward: int = 2048
    heads: int = 4
    kv_heads: int = 1
    head_size: int = 256
    window: int = 512


def write_gemma3_variant(path: Path, shape: Gemma3Shape) -> Path:
    import gguf  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from llmctl.smoke_model import TOKENS  # noqa: PLC0415

    w = gguf.GGUFWriter(path, arch="gemma3")
    w.add_block_count(shape.layers)
    w.add_context_length(32768)
    w.add_embedding_length(shape.embedding)
    w.add_feed_forward_length(shape.feed_forward)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_key_length(shape.head_size)
    w.add_value_length(shape.head_size)
    w.add_sliding_window(shape.window)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_tokenizer_model("llama")
    w.add_token_list(TOKENS)
    w.add_token_scores([0.0] * len(TOKENS))
    special = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    w.add_token_types(special + [gguf.TokenType.BYTE] * (len(TOKENS) - len(special)))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    e, q, kv = shape.embedding, shape.heads * shape.head_size, shape.kv_heads * shape.head_size
    ff, d = shape.feed_forward, shape.head_size
    w.add_tensor("token_embd.weight", np.zeros((len(TOKENS), e), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.zeros(e, dtype=np.float32))
    for i in range(shape.layers):
        for name, dims in (
            ("attn_norm", (e,)), ("attn_q", (q, e)), ("attn_k", (kv, e)), ("attn_v", (kv, e)),
            ("attn_output", (e, q)), ("post_attention_norm", (e,)), ("attn_k_norm", (d,)),
            ("attn_q_norm", (d,)), ("ffn_norm", (e,)), ("ffn_gate", (ff, e)),
            ("ffn_up", (ff, e)), ("ffn_down", (e, ff)), ("post_ffw_norm", (e,)),
        ):  # fmt: skip
            w.add_tensor(f"blk.{i}.{name}.weight", np.zeros(dims, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@dataclass(frozen=True)
class Case:
    label: str
    shape: SmokeShape | Gemma3Shape | None  # None: the real model (--real-model)
    context: int
    kv_type: str = "f16"
    flash_attention: bool = True

    def server_args(self) -> list[str]:
        args = ["-c", str(self.context), "-ngl", "0", "-v"]
        if self.kv_type != "f16":
            args += ["-ctk", self.kv_type, "-ctv", self.kv_type]
        if not self.flash_attention:
            args += ["-fa", "off"]
        return args


CASES = [
    Case("tiny 2L x64, 4/4 heads, f32", SmokeShape(), 512),
    Case(
        "4L x256, 8/2 heads (GQA), f16",
        SmokeShape(layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=768, weight_type="f16"),
        2048,
    ),
    Case(
        "3L x128, 4/1 heads (MQA), q8_0",
        SmokeShape(
            layers=3, embedding=128, heads=4, kv_heads=1, feed_forward=384, weight_type="q8_0", context=8192
        ),
        4096,
    ),
    Case(
        "6L x384, 6/2 heads, q4_0",
        SmokeShape(layers=6, embedding=384, heads=6, kv_heads=2, feed_forward=1024, weight_type="q4_0"),
        1024,
    ),
    Case(
        "2L x256, 4/4 heads (MHA), f32, ctx 8192",
        SmokeShape(
            layers=2, embedding=256, heads=4, kv_heads=4, feed_forward=512, weight_type="f32", context=8192
        ),
        8192,
    ),
    Case(
        "4L x256 GQA f16, q8_0 KV cache",
        SmokeShape(layers=4, embedding=256, heads=8, kv_heads=2, feed_forward=768, weight_type="f16"),
        2048,
        kv_type="q8_0",
    ),
    Case(
        "6L x384 q4_0, flash attention off",
        SmokeShape(layers=6, embedding=384, heads=6, kv_heads=2, feed_forward=1024, weight_type="q4_0"),
        1024,
        flash_attention=False,
    ),
    Case(
        "8L x512, 8/2 heads, f16",
        SmokeShape(layers=8, embedding=512, heads=8, kv_heads=2, feed_forward=1536, weight_type="f16"),
        4096,
    ),
    # Not among the shapes the compute terms were fitted on: odd widths and a context that is
    # not a multiple of 256.
    Case(
        "5L x768, 12/4 heads, q8_0, ctx 3000 (held out)",
        SmokeShape(layers=5, embedding=768, heads=12, kv_heads=4, feed_forward=2560, weight_type="q8_0"),
        3000,
    ),
    Case(
        "3L x320, 5/1 heads, F=1000, f16 (held out)",
        SmokeShape(layers=3, embedding=320, heads=5, kv_heads=1, feed_forward=1000, weight_type="f16"),
        1500,
    ),
    Case(
        "4L x2048, 16/4 heads, q4_0 (TinyLlama width)",
        SmokeShape(layers=4, embedding=2048, heads=16, kv_heads=4, feed_forward=5632, weight_type="q4_0"),
        2048,
    ),
]
# The real model: Gemma 3 270M Q4_K_M (sliding-window layers, Q4_K weights the CPU repacks, a
# 262k vocabulary), at the context the demo serves it with.
G3 = Gemma3Shape()
VARIANTS = [
    Case("Gemma 3 shape: 6L x640, F=2048, 4/1 heads x256 (the 270M's widths)", G3, 512),
    Case("Gemma 3 shape: F=4096", Gemma3Shape(feed_forward=4096), 512),
    Case("Gemma 3 shape: E=1280", Gemma3Shape(embedding=1280), 512),
    Case("Gemma 3 shape: E=1536", Gemma3Shape(embedding=1536), 512),
    Case("Gemma 3 shape: F=1024", Gemma3Shape(feed_forward=1024), 512),
    Case("Gemma 3 shape: 8 heads (Q = F)", Gemma3Shape(heads=8), 512),
    Case("Gemma 3 shape: 16 heads (Q > F)", Gemma3Shape(heads=16), 512),
    Case("Gemma 3 shape: 2 KV heads", Gemma3Shape(kv_heads=2), 512),
    Case("Gemma 3 shape: head size 128", Gemma3Shape(head_size=128), 512),
    Case("Gemma 3 shape: E=F=2048, 8 heads", Gemma3Shape(embedding=2048, heads=8), 512),
    Case("Gemma 3 shape: 2 layers (windowed only)", Gemma3Shape(layers=2), 512),
    Case("Gemma 3 shape: 8 heads, flash attention off", Gemma3Shape(heads=8), 512, flash_attention=False),
]
REAL = [
    Case("Gemma 3 270M Q4_K_M (real)", None, 2048),
    Case("Gemma 3 270M Q4_K_M (real), ctx 8192", None, 8192),
    Case("Gemma 3 270M Q4_K_M (real), flash attention off", None, 2048, flash_attention=False),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def logged_buffers(server: str, model: Path, args: list[str], timeout: float = 180) -> dict[str, float]:
    """Start llama-server, read its log until it is ready, stop it; the buffers of its last load.

    A load ends with its compute buffer line; the --fit probe's load comes first. A model with
    sliding-window layers logs two KV buffers in one load (full and windowed caches): summed."""
    argv = [server, "-m", str(model), "--host", "127.0.0.1", "--port", str(free_port()), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    loads: list[dict[str, float]] = [{}]
    deadline = time.monotonic() + timeout
    log: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            match = BUFFER.search(line)
            if match:
                kind = re.sub(r"\s+", " ", match.group(1))
                loads[-1][kind] = loads[-1].get(kind, 0.0) + float(match.group(2))
                if kind == "CPU compute":
                    loads.append({})
            if any(marker in line for marker in READY) or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    done = [load for load in loads if "CPU compute" in load]
    if not done or "CPU KV" not in done[-1]:
        tail = "".join(log[-20:])
        raise SystemExit(f"llama-server did not log its buffers for {model}:\n{tail}")
    found = done[-1]
    return {
        "weights": found.get("CPU_Mapped model", found.get("CPU model", 0.0)),
        "repack": found.get("CPU_REPACK model", 0.0),
        "kv": found["CPU KV"],
        "compute": found["CPU compute"],
        "output": found.get("CPU output", 0.0),
    }


def estimated(case: Case, model: Path) -> dict[str, float]:
    # llama-server's defaults, which llmctl keeps: -np auto (4 slots, one unified KV stream),
    # -ub 512, flash attention auto (on for CPU).
    est = estimate_gguf(
        model,
        context=case.context,
        gpu_layers=0,
        cpu_only=True,
        kv_cache_type=case.kv_type,
        parallel=4,
        kv_unified=True,
        flash_attention=case.flash_attention,
    )
    parts = (est.weights_cpu, est.repack_cpu, est.kv_cpu, est.compute_cpu, est.output_cpu)
    return {part: value / MiB for part, value in zip(PARTS, parts, strict=True)}


def error(est: float, log: float) -> float:
    return 0.0 if log == 0 else (est - log) / log * 100


def within(est: float, log: float) -> bool:
    if log < SMALL:
        return abs(est - log) <= SMALL_SLACK
    return abs(error(est, log)) <= TARGET


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=os.environ.get("LLMCTL_TEST_LLAMA_SERVER"))
    parser.add_argument("--real-model", type=Path, default=os.environ.get("LLMCTL_TEST_REAL_MODEL") or None)
    parser.add_argument(
        "--only", choices=("real", "smoke"), help="Only the real model's rows, or only the smoke shapes."
    )
    parser.add_argument("--keep", type=Path, help="Write the models here (default: a temporary directory).")
    options = parser.parse_args()
    if not options.server:
        parser.error("no llama-server: pass --server or set LLMCTL_TEST_LLAMA_SERVER (scripts/provision)")
    cases = [] if options.only == "real" else [*CASES, *VARIANTS]
    if options.only != "smoke":
        if options.real_model is None or not options.real_model.is_file():
            parser.error("no real model: pass --real-model or set LLMCTL_TEST_REAL_MODEL (scripts/provision)")
        cases += REAL
    version = subprocess.run([options.server, "--version"], capture_output=True, text=True, check=False)
    print(f"llama-server: {(version.stdout + version.stderr).strip().splitlines()[0]}")
    print("MiB, estimate / llama.cpp's log (error); total = weights + repack + KV + compute + output\n")
    print("| shape | ctx | weights | repack | KV | compute | output | total |")
    print("|" + "---|" * 8)
    worst, over = 0.0, []
    with tempfile.TemporaryDirectory(prefix="llmctl-estimate-") as tmp:
        directory = options.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(cases):
            if case.shape is None:
                model = options.real_model
            elif isinstance(case.shape, Gemma3Shape):
                model = write_gemma3_variant(directory / f"case{i}.gguf", case.shape)
            else:
                model = write_smoke_model(directory / f"case{i}.gguf", case.shape)
            log = logged_buffers(options.server, model, case.server_args())
            est = estimated(case, model)
            log["total"] = sum(log.values())
            est["total"] = sum(est.values())
            cells = []
            for part in (*PARTS, "total"):
                cells.append(f"{est[part]:.2f} / {log[part]:.2f} ({error(est[part], log[part]):+.1f} %)")
                if not within(est[part], log[part]):
                    over.append(f"{case.label}: {part}")
            worst = max(worst, abs(error(est["total"], log["total"])))
            print(f"| {case.label} | {case.context} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nworst total error {worst:.2f} %; target {TARGET:g} % per component and in total", end="")
    print(f" (components under {SMALL} MiB: {SMALL_SLACK} MiB)")
    if over:
        print("OVER the target: " + "; ".join(over))
        return 1
    print("every row within the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
