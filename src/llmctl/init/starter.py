"""The starter config `llmctl init` writes: what to configure from what was found, and why.

Choosing is a pure function of a `Detection` (and of which ports are taken); the rendered
YAML carries what was found and each choice as comments, so the file explains itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.init.detection import (
    KINDS,
    SHARD_SUFFIX,
    Detection,
    FoundExecutable,
    GgufFile,
    GpuInfo,
    pretty_path,
)

DEFAULT_PORTS = {
    "ollama": 11434,
    "llama-cpp-python": 8000,
    "llama-server": 8080,
    "vllm": 8001,
    "gateway": 4000,
    "router": 4001,
}
BACKEND_NAMES = {"llama-server": "llama-server", "llama-cpp-python": "llama-cpp", "ollama": "ollama"}
DEFAULT_CONTEXT = 4096
GPU_FIT = 0.8  # a model file larger than this share of the biggest GPU is not chosen for it


@dataclass(frozen=True)
class Choice:
    what: str
    why: str


@dataclass
class Plan:
    config: dict[str, Any]
    choices: list[Choice] = field(default_factory=list)


def model_id_for(path: Path, taken: set[str]) -> str:
    stem = SHARD_SUFFIX.sub("", path.name)
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    base = re.sub(r"[^A-Za-z0-9._:/@+-]+", "-", stem).strip("-._") or "model"
    if not base[0].isalnum():
        base = "m" + base
    base = base[:120]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def pick_gguf(ggufs: Sequence[GgufFile], gpus: Sequence[GpuInfo]) -> tuple[GgufFile, str]:
    """With a GPU: the largest file that fits in GPU_FIT of the biggest one; else the smallest."""
    by_size = sorted(ggufs, key=lambda g: (g.size, str(g.path)))
    if gpus:
        room = max(g.total_bytes for g in gpus) * GPU_FIT
        fitting = [g for g in by_size if g.size <= room]
        if fitting:
            return fitting[-1], f"the largest GGUF that fits in {GPU_FIT:.0%} of the biggest GPU's memory"
        return by_size[
            0
        ], "the smallest GGUF (none fits in the GPU's memory: lower gpu_layers or pick another)"
    return by_size[0], "the smallest GGUF (no GPU: it runs on the CPU)"


def _free_port(wanted: int, used: set[int], in_use: Callable[[int], bool]) -> int:
    port = wanted
    while port in used or in_use(port):
        port += 1
    used.add(port)
    return port


class _Planner:
    def __init__(self, detection: Detection, port_in_use: Callable[[int], bool], home: Path) -> None:
        self.detection = detection
        self.port_in_use = port_in_use
        self.home = home
        self.result = Plan({"version": 1, "backends": {}, "models": {}})
        self.backends: dict[str, Any] = self.result.config["backends"]
        self.models: dict[str, Any] = self.result.config["models"]
        self.used_ports: set[int] = set()
        self.taken: set[str] = set()
        self.gpu = bool(detection.gpus)

    def choose(self, what: str, why: str) -> None:
        self.result.choices.append(Choice(what, why))

    def port_for(self, kind: str) -> int:
        wanted = DEFAULT_PORTS[kind]
        port = _free_port(wanted, self.used_ports, self.port_in_use)
        if port != wanted:
            self.choose(
                f"port {port} for {kind}", f"{wanted} is in use by another process (ss -ltnp shows it)"
            )
        return port

    def backend(self, kind: str, found: FoundExecutable) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": kind, "command": str(found.path), "port": self.port_for(kind)}
        if not self.gpu:
            entry["gpus"] = []
        return entry

    def llama(self) -> None:
        from llmctl.doctor import human_size  # noqa: PLC0415

        detection = self.detection
        llama = detection.first("llama-server") or detection.first("llama-cpp-python")
        if llama is None:
            return
        if not detection.ggufs:
            self.choose(f"{llama.kind} not configured", "no GGUF file in " + _dirs_text(detection, self.home))
            return
        name = BACKEND_NAMES[llama.kind]
        chosen, why = pick_gguf(detection.ggufs, detection.gpus)
        entry = self.backend(llama.kind, llama)
        entry["model"] = None  # filled in below; here for its place in the file
        for gguf in sorted(detection.ggufs, key=lambda g: str(g.path)):
            mid = model_id_for(gguf.path, self.taken)
            model: dict[str, Any] = {"backend": name, "source": str(gguf.path), "context": DEFAULT_CONTEXT}
            if self.gpu:
                model["gpu_layers"] = 99
            self.models[mid] = model
            if gguf is chosen:
                entry["model"] = mid
        self.backends[name] = entry
        self.choose(f"backend {name} ({llama.kind}, {llama.path})", f"found in {llama.where}")
        others = len(detection.ggufs) - 1
        self.choose(
            f"{name} serves {entry['model']} ({human_size(chosen.size)})"
            + (f"; {others} other GGUF file(s) added as models it can switch to" if others else ""),
            why,
        )
        if llama.kind == "llama-server" and detection.first("llama-cpp-python"):
            self.choose(
                "llama-cpp-python not configured", "llama-server serves the GGUF files (add it by hand)"
            )

    def ollama(self) -> None:
        ollama = self.detection.first("ollama")
        if ollama is None:
            return
        self.backends["ollama"] = self.backend("ollama", ollama)
        self.choose(f"backend ollama ({ollama.path})", f"found in {ollama.where}")
        tags = self.detection.ollama_models
        if not tags:
            self.choose(
                "no Ollama models", "no Ollama answered on 127.0.0.1:11434 to list them (ollama pull MODEL)"
            )
            return
        for tag in tags:
            valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}", tag) and tag not in self.taken
            mid = tag if valid else model_id_for(Path(tag + ".gguf"), self.taken)
            self.taken.add(mid)
            self.models[mid] = {"backend": "ollama", "source": tag}
        self.choose(
            f"{len(tags)} Ollama model(s) routed: {', '.join(tags)}",
            "pulled in the Ollama on 127.0.0.1:11434 (llmctl's Ollama runs as you, with ~/.ollama/models:"
            " models pulled by a system-wide Ollama live elsewhere)",
        )

    def vllm(self) -> None:
        vllm = self.detection.first("vllm")
        if vllm is not None:
            self.choose(
                f"vllm ({vllm.path}) not configured",
                "it needs a Hugging Face model id: add a vllm backend by hand (config/llmctl.example.yaml)",
            )

    def gateway(self) -> None:
        litellm = self.detection.first("litellm")
        if litellm is not None and self.backends:
            gateway_port = self.port_for("gateway")
            # New configs serve every model on demand (docs/on-demand.md); older ones opt in.
            metrics, python = _litellm_has_metrics_module(litellm.path)
            self.result.config["gateway"] = {
                "command": str(litellm.path), "port": gateway_port, "on_demand": True,
                "router_port": self.port_for("router"), "litellm_metrics": metrics,
            }  # fmt: skip
            self.choose(f"gateway (LiteLLM, {litellm.path})", f"found in {litellm.where}")
            self.choose("models on demand (gateway.on_demand)", "every model answers; loaded when asked for")
            if metrics:
                self.choose("LiteLLM's metrics on (gateway.litellm_metrics)", "on the gateway's /metrics/")
            else:
                self.choose(
                    "LiteLLM's metrics off (gateway.litellm_metrics)",
                    f"its python lacks prometheus-client: `{python} -m pip install prometheus-client`, "
                    "then set it true",
                )
            return
        self.result.config["gateway"] = {"enabled": False}
        self.choose(
            "gateway disabled", "no litellm executable found" if litellm is None else "no backend to route to"
        )


def plan(detection: Detection, port_in_use: Callable[[int], bool], home: Path) -> Plan:
    """The starter config for what was found, and why each thing was chosen."""
    planner = _Planner(detection, port_in_use, home)
    planner.llama()
    planner.ollama()
    planner.vllm()
    planner.gateway()
    if not planner.backends:
        planner.choose(
            "no backend configured",
            "found no llama-server or llama-cpp-python with GGUF files, and no Ollama: "
            "install one and run llmctl init --force, or edit the config",
        )
    return planner.result


# --- as text ----------------------------------------------------------------------------------------


def _dirs_text(detection: Detection, home: Path) -> str:
    return (
        ", ".join(pretty_path(d, home) for d in detection.model_dirs) or "the model directories (none exist)"
    )


def render_plan(result: Plan, detection: Detection, home: Path) -> str:
    import yaml  # noqa: PLC0415

    lines = ["# Written by `llmctl init` from what it found on this machine; edit freely.", "#"]
    lines += [f"# {line}" for line in found_lines(detection, home)]
    lines.append("#")
    lines.append("# chose:")
    lines += [f"#   {c.what}: {c.why}" for c in result.choices]
    body = yaml.safe_dump(result.config, sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(lines) + "\n" + body


def found_lines(detection: Detection, home: Path) -> list[str]:
    from llmctl.doctor import human_size  # noqa: PLC0415

    lines = ["found:"]
    for kind in KINDS:
        found = detection.executables.get(kind) or []
        text = ", ".join(f"{f.path} ({f.where})" for f in found) if found else "not found"
        lines.append(f"  {kind}: {text}")
    if detection.ggufs:
        largest = max(g.size for g in detection.ggufs)
        more = " (scan stopped early)" if detection.scan_truncated else ""
        lines.append(
            f"  GGUF files: {len(detection.ggufs)} in {_dirs_text(detection, home)}, "
            f"largest {human_size(largest)}{more}"
        )
    else:
        lines.append(f"  GGUF files: none in {_dirs_text(detection, home)}")
    if detection.ollama_models is None:
        lines.append("  Ollama models: no Ollama answered on 127.0.0.1:11434")
    else:
        lines.append(f"  Ollama models: {', '.join(detection.ollama_models) or 'none pulled'}")
    if detection.gpus:
        gpus = "; ".join(f"{g.index}: {g.name}, {human_size(g.total_bytes)}" for g in detection.gpus)
        lines.append(f"  GPUs: {gpus} ({detection.gpu_note})")
    else:
        lines.append(f"  GPUs: none ({detection.gpu_note})")
    return lines


def _litellm_has_metrics_module(entry_point: Path) -> tuple[bool, Path]:
    """(whether LiteLLM's python can import what its metrics need, that python)."""
    from llmctl.gateway_runtime.interpreter import METRICS_MODULE, can_import, litellm_python  # noqa: PLC0415

    try:
        python = litellm_python(entry_point)
    except LlmctlError:
        return False, entry_point.parent / "python"
    return can_import(python, METRICS_MODULE), python
