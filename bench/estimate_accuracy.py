"""How close llmctl's GGUF memory estimate is to what llama.cpp itself allocates.

For each model shape, write a random-weight llama GGUF (llmctl.smoke_model), start the real
llama-server on it with -v on CPU (-ngl 0: the "device" buffers are then CPU buffers), read the
buffer sizes it logs, and compare them with `llmctl.estimate.estimate_gguf`:

    weights   <- "CPU_Mapped model buffer size"
    KV        <- "CPU KV buffer size"
    compute   <- "CPU compute buffer size"

llama-server logs one set of these while its --fit step probes the device memory and another
when it really loads: the last of each is taken. It logs MiB with two decimals, so a logged
figure is only good to +-0.005 MiB. The per-process GPU overhead (CUDA context, 512 MiB in the
estimate) does not exist on CPU and is not measured here.

Usage: bench/estimate_accuracy.py [--server PATH] [--keep DIR]
(the server defaults to $LLMCTL_TEST_LLAMA_SERVER, from scripts/provision's provision.env)
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

BUFFER = re.compile(r"\b(CPU_Mapped model|CPU model|CPU KV|CPU compute) buffer size =\s*([0-9.]+) MiB")
READY = ("listening on http",)
TARGET = 5.0  # per cent


@dataclass(frozen=True)
class Case:
    label: str
    shape: SmokeShape
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def logged_buffers(server: str, model: Path, args: list[str], timeout: float = 120) -> dict[str, float]:
    """Start llama-server, read its log until it is ready, stop it; the last size of each buffer."""
    argv = [server, "-m", str(model), "--host", "127.0.0.1", "--port", str(free_port()), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    log: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            match = BUFFER.search(line)
            if match:
                found[match.group(1)] = float(match.group(2))  # later lines replace the probe's
            if any(marker in line for marker in READY) or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if "CPU KV" not in found or "CPU compute" not in found:
        tail = "".join(log[-20:])
        raise SystemExit(f"llama-server did not log its buffers for {model}:\n{tail}")
    return {
        "weights": found.get("CPU_Mapped model", found.get("CPU model", 0.0)),
        "kv": found["CPU KV"],
        "compute": found["CPU compute"],
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
    return {"weights": est.weights_cpu / MiB, "kv": est.kv_cpu / MiB, "compute": est.compute_cpu / MiB}


def error(est: float, log: float) -> float:
    return 0.0 if log == 0 else (est - log) / log * 100


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=os.environ.get("LLMCTL_TEST_LLAMA_SERVER"))
    parser.add_argument("--keep", type=Path, help="Write the models here (default: a temporary directory).")
    options = parser.parse_args()
    if not options.server:
        parser.error("no llama-server: pass --server or set LLMCTL_TEST_LLAMA_SERVER (scripts/provision)")
    version = subprocess.run([options.server, "--version"], capture_output=True, text=True, check=False)
    print(f"llama-server: {(version.stdout + version.stderr).strip().splitlines()[0]}")
    print("MiB, estimate / llama.cpp's log (error); total = weights + KV + compute\n")
    header = "| shape | ctx | weights | KV | compute | total |"
    print(header)
    print("|" + "---|" * 6)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="llmctl-estimate-") as tmp:
        directory = options.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(CASES):
            model = write_smoke_model(directory / f"case{i}.gguf", case.shape)
            log = logged_buffers(options.server, model, case.server_args())
            est = estimated(case, model)
            log["total"] = sum(log.values())
            est["total"] = sum(est.values())
            cells = []
            for part in ("weights", "kv", "compute", "total"):
                err = error(est[part], log[part])
                cells.append(f"{est[part]:.2f} / {log[part]:.2f} ({err:+.1f} %)")
            worst = max(worst, abs(error(est["total"], log["total"])))
            print(f"| {case.label} | {case.context} | " + " | ".join(cells) + " |", flush=True)
    verdict = "within" if worst <= TARGET else "OVER"
    print(f"\nworst total error {worst:.2f} % ({verdict} the {TARGET:g} % target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
