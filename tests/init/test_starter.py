"""llmctl init's starter config: the choice from what was found, and the commented YAML."""

from __future__ import annotations

import sys
from pathlib import Path

from llmctl import init
from llmctl.init import Detection, FoundExecutable, GgufFile, GpuInfo
from tests.init.fakes import GIB, loads


def found(kind: str, path: str, where: str = "PATH") -> FoundExecutable:
    return FoundExecutable(kind, Path(path), where)


def detection(
    *,
    executables: dict[str, list[FoundExecutable]] | None = None,
    ggufs: list[GgufFile] | None = None,
    ollama: list[str] | None = None,
    gpus: list[GpuInfo] | None = None,
) -> Detection:
    execs: dict[str, list[FoundExecutable]] = {kind: [] for kind in init.KINDS} | (executables or {})
    return Detection(execs, ggufs or [], [Path("/home/u/models")], False, ollama, gpus or [], "test")


def test_pick_gguf() -> None:
    small, mid, big = (GgufFile(Path(f"/m/{n}.gguf"), s * GIB) for n, s in (("s", 1), ("m", 8), ("b", 40)))
    assert init.pick_gguf([big, small, mid], [])[0] is small
    assert init.pick_gguf([big, small, mid], [GpuInfo(0, "RTX 4090", 24 * GIB)])[0] is mid
    chosen, why = init.pick_gguf([big], [GpuInfo(0, "small", 8 * GIB)])
    assert chosen is big and "none fits" in why


def test_model_ids() -> None:
    taken: set[str] = set()
    assert (
        init.model_id_for(Path("/m/Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf"), taken)
        == "Qwen2.5-Coder-7B-Instruct-Q4_K_M"
    )
    assert init.model_id_for(Path("/m/big-00001-of-00003.gguf"), taken) == "big"
    assert init.model_id_for(Path("/x/big.gguf"), taken) == "big-2"
    assert init.model_id_for(Path("/m/my model (v2).gguf"), taken) == "my-model-v2"
    assert init.model_id_for(Path("/m/_.gguf"), taken) == "model"


def test_plan_everything_on_a_gpu_machine() -> None:
    d = detection(
        executables={
            "llama-server": [
                found("llama-server", "/home/u/llama.cpp/build/bin/llama-server", "~/llama.cpp/build/bin")
            ],
            "llama-cpp-python": [found("llama-cpp-python", "/home/u/venvs/l/bin/python3")],
            "ollama": [found("ollama", "/usr/bin/ollama")],
            "vllm": [found("vllm", "/home/u/venvs/vllm/bin/vllm")],
            "litellm": [found("litellm", "/home/u/venvs/litellm/bin/litellm")],
        },
        ggufs=[
            GgufFile(Path("/home/u/models/small.gguf"), GIB),
            GgufFile(Path("/home/u/models/mid.gguf"), 10 * GIB),
        ],
        ollama=["llama3.2:latest", "nomic-embed-text:latest"],
        gpus=[GpuInfo(0, "RTX 4090", 24 * GIB)],
    )
    plan = init.plan(d, lambda port: False, Path("/home/u"))
    config = loads(init.render_plan(plan, d, Path("/home/u")))
    assert config["backends"] == {
        "llama-server": {
            "kind": "llama-server",
            "command": "/home/u/llama.cpp/build/bin/llama-server",
            "port": 8080,
            "model": "mid",
        },
        "ollama": {"kind": "ollama", "command": "/usr/bin/ollama", "port": 11434},
    }
    assert config["models"]["mid"] == {
        "backend": "llama-server", "source": "/home/u/models/mid.gguf", "context": 4096, "gpu_layers": 99
    }  # fmt: skip
    assert config["models"]["llama3.2:latest"] == {"backend": "ollama", "source": "llama3.2:latest"}
    assert set(config["models"]) == {"mid", "small", "llama3.2:latest", "nomic-embed-text:latest"}
    assert config["gateway"] == {
        "command": "/home/u/venvs/litellm/bin/litellm",
        "port": 4000,
        "on_demand": True,
        "router_port": 4001,
        "litellm_metrics": False,  # no python at /home/u/venvs/litellm/bin: no prometheus_client
    }
    whats = [c.what for c in plan.choices]
    assert "LiteLLM's metrics off (gateway.litellm_metrics)" in whats
    assert "llama-cpp-python not configured" in whats
    assert any(w.startswith("vllm (") and w.endswith("not configured") for w in whats)


def test_plan_cpu_only_with_llama_cpp_python_and_busy_ports() -> None:
    d = detection(
        executables={"llama-cpp-python": [found("llama-cpp-python", "/home/u/venvs/l/bin/python3")]},
        ggufs=[
            GgufFile(Path("/home/u/models/a.gguf"), 3 * GIB),
            GgufFile(Path("/home/u/models/b.gguf"), GIB),
        ],
    )
    plan = init.plan(d, lambda port: port in (8000, 8001), Path("/home/u"))
    config = loads(init.render_plan(plan, d, Path("/home/u")))
    assert config["backends"]["llama-cpp"] == {
        "kind": "llama-cpp-python", "command": "/home/u/venvs/l/bin/python3", "port": 8002, "model": "b", "gpus": []
    }  # fmt: skip
    assert "gpu_layers" not in config["models"]["b"]
    assert config["gateway"] == {"enabled": False}
    assert any(c.what == "port 8002 for llama-cpp-python" for c in plan.choices)


def test_plan_with_nothing_found_is_still_a_valid_config() -> None:
    d = detection(executables={"llama-server": [found("llama-server", "/usr/bin/llama-server")]})
    plan = init.plan(d, lambda port: False, Path("/home/u"))
    text = init.render_plan(plan, d, Path("/home/u"))
    assert loads(text) == {"version": 1, "backends": {}, "models": {}, "gateway": {"enabled": False}}
    assert "#   llama-server not configured: no GGUF file in ~/models" in text
    assert "#   no backend configured:" in text


def test_found_lines() -> None:
    d = detection(
        executables={"ollama": [found("ollama", "/usr/bin/ollama")]},
        ggufs=[GgufFile(Path("/home/u/models/a.gguf"), 3 * GIB)],
        ollama=[],
        gpus=[GpuInfo(0, "RTX 4090", 24 * GIB)],
    )
    lines = init.found_lines(d, Path("/home/u"))
    assert "  ollama: /usr/bin/ollama (PATH)" in lines
    assert "  llama-server: not found" in lines
    assert "  GGUF files: 1 in ~/models, largest 3.0 GiB" in lines
    assert "  Ollama models: none pulled" in lines
    assert "  GPUs: 0: RTX 4090, 24.0 GiB (test)" in lines


def test_plan_turns_litellms_metrics_on_where_its_python_has_prometheus_client(tmp_path: Path) -> None:
    # A `litellm` entry point whose #! names this venv's python, which has prometheus_client
    # (llmctl's supervisor uses it), as pip writes the script into LiteLLM's venv.
    entry = tmp_path / "bin" / "litellm"
    entry.parent.mkdir()
    entry.write_text(f"#!{sys.executable}\nimport sys\n")
    entry.chmod(0o755)
    d = detection(
        executables={"llama-server": [found("llama-server", "/usr/bin/llama-server")],
                     "litellm": [found("litellm", str(entry))]},
        ggufs=[GgufFile(Path("/home/u/models/small.gguf"), GIB)],
    )  # fmt: skip
    plan = init.plan(d, lambda port: False, Path("/home/u"))
    config = loads(init.render_plan(plan, d, Path("/home/u")))
    assert config["gateway"]["litellm_metrics"] is True
    assert "LiteLLM's metrics on (gateway.litellm_metrics)" in [c.what for c in plan.choices]
