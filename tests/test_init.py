"""llmctl init: detection on described machines, the choice, the written config, --force, --demo."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import init, snapshots
from llmctl.cli import main
from llmctl.config.load import load_config, parse_config
from llmctl.errors import ExitCode, LlmctlError
from llmctl.init import Detection, FoundExecutable, GgufFile, GpuInfo, Sources
from llmctl.paths import Paths

GIB = 1024**3


def executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def venv(root: Path, *, modules: tuple[str, ...] = (), scripts: tuple[str, ...] = ()) -> Path:
    """A virtualenv's layout: pyvenv.cfg, bin/python3, site-packages with these packages."""
    (root / "pyvenv.cfg").parent.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = executable(root / "bin" / "python3", "#!/bin/sh\nexit 0\n")
    for module in modules:
        package = root / "lib" / "python3.11" / "site-packages" / module
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    for script in scripts:
        executable(root / "bin" / script, f"#!{python}\n")
    return python


def gguf(path: Path, size: int = 64, magic: bytes = b"GGUF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + b"\0" * (size - len(magic)))
    return path


def no_ollama() -> list[str] | None:
    return None


def no_gpus() -> tuple[list[GpuInfo], str]:
    return [], "NVML Shared Library Not Found"


def machine(home: Path, path_dirs: list[Path] | None = None, **env: str) -> Sources:
    environment = {"PATH": os.pathsep.join(str(p) for p in path_dirs or [])} | env
    return Sources(home=home, env=environment, ollama=no_ollama, gpus=no_gpus)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "h"


# --- detection ----------------------------------------------------------------------------------------


def test_bin_dirs_path_first_then_user_places_without_duplicates(home: Path) -> None:
    (home / "venvs" / "b" / "bin").mkdir(parents=True)
    (home / "venvs" / "a" / "bin").mkdir(parents=True)
    (home / ".venvs" / "c" / "bin").mkdir(parents=True)
    (home / ".local" / "pipx" / "venvs" / "litellm" / "bin").mkdir(parents=True)
    env = {"PATH": f"/usr/bin:relative/bin:{home}/.local/bin"}
    dirs = init.bin_dirs(home, env)
    assert dirs == [
        (Path("/usr/bin"), "PATH"),
        (home / ".local" / "bin", "PATH"),
        (home / "llama.cpp" / "build" / "bin", "~/llama.cpp/build/bin"),
        (home / "venvs" / "a" / "bin", "~/venvs/a/bin"),
        (home / "venvs" / "b" / "bin", "~/venvs/b/bin"),
        (home / ".venvs" / "c" / "bin", "~/.venvs/c/bin"),
        (home / ".local" / "pipx" / "venvs" / "litellm" / "bin", "~/.local/pipx/venvs/litellm/bin"),
    ]


def test_find_executables_in_every_place(home: Path, tmp_path: Path) -> None:
    usr = tmp_path / "usr-bin"
    executable(usr / "ollama")
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "llama", modules=("llama_cpp",))
    venv(home / "venvs" / "plain")  # a python without llama_cpp is not llama-cpp-python
    litellm_python = venv(home / ".local" / "pipx" / "venvs" / "litellm", scripts=("litellm",))
    venv(home / ".venvs" / "vllm", scripts=("vllm",))
    # pipx links the entry point into ~/.local/bin: found once, first where PATH has it.
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "litellm").symlink_to(litellm_python.parent / "litellm")
    (home / "venvs" / "broken" / "bin").mkdir(parents=True)
    (home / "venvs" / "broken" / "bin" / "vllm").write_text("not executable")

    found = init.detect(machine(home, [usr]), models=False).executables
    assert [(f.path, f.where) for f in found["ollama"]] == [(usr / "ollama", "PATH")]
    assert [f.where for f in found["llama-server"]] == ["~/llama.cpp/build/bin"]
    assert [f.path for f in found["llama-cpp-python"]] == [home / "venvs" / "llama" / "bin" / "python3"]
    assert [f.path for f in found["litellm"]] == [home / ".local" / "bin" / "litellm"]
    assert [f.where for f in found["vllm"]] == ["~/.venvs/vllm/bin"]


def test_python_has_module_asks_a_python_outside_a_venv(tmp_path: Path) -> None:
    system_python = Path(sys.base_prefix) / "bin" / "python3"  # the tests run in a venv: its base
    if not system_python.is_file():
        pytest.skip(f"no {system_python}")
    assert init.python_has_module(system_python, "json")
    assert not init.python_has_module(system_python, "no_such_module_here")
    assert not init.python_has_module(tmp_path / "missing-python", "json")
    # A venv's python is judged by its site-packages, without running it.
    assert init.python_has_module(venv(tmp_path / "v", modules=("llama_cpp",)), "llama_cpp")
    assert not init.python_has_module(tmp_path / "v" / "bin" / "python3", "json")


def test_model_dirs(home: Path, tmp_path: Path) -> None:
    (home / "models").mkdir(parents=True)
    (home / ".cache" / "llama.cpp").mkdir(parents=True)
    cache = tmp_path / "llama-cache"
    cache.mkdir()
    assert init.model_dirs(home, {"LLAMA_CACHE": str(cache)}) == [
        home / "models",
        home / ".cache" / "llama.cpp",
        cache,
    ]
    assert init.model_dirs(home, {"LLAMA_CACHE": "relative"}) == [
        home / "models",
        home / ".cache" / "llama.cpp",
    ]


def test_scan_ggufs_checks_magic_and_skips_projectors_shards_hidden_and_symlinked_dirs(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    a = gguf(root / "a-q4_k_m.gguf", 100)
    gguf(root / "notes.GGUF.txt")
    gguf(root / "fake.gguf", magic=b"PK\x03\x04")
    gguf(root / "mmproj-a-f16.gguf")
    first = gguf(root / "big" / "big-00001-of-00002.gguf", 200)
    gguf(root / "big" / "big-00002-of-00002.gguf")
    gguf(root / ".trash" / "old.gguf")
    (root / "link").symlink_to(root / "big")
    (root / "same.gguf").symlink_to(a)
    files, truncated = init.scan_ggufs([root])
    assert sorted((f.path, f.size) for f in files) == [(a, 100), (first, 200)]
    assert not truncated


def test_scan_ggufs_is_bounded(tmp_path: Path) -> None:
    deep = tmp_path / "m" / "1" / "2" / "3" / "4" / "5"
    gguf(deep / "deep.gguf")
    for i in range(5):
        gguf(tmp_path / "m" / f"f{i}.gguf")
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_depth=3)
    assert len(files) == 5 and truncated
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_files=2)
    assert len(files) == 2 and truncated
    files, truncated = init.scan_ggufs([tmp_path / "m"], max_entries=3)
    assert len(files) <= 3 and truncated


class _Tags(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        status = 200 if self.path == "/api/tags" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ollama_stand_in() -> Iterator[tuple[str, type[_Tags]]]:
    handler = type("Tags", (_Tags,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_ollama_models_from_api_tags(ollama_stand_in: tuple[str, type[_Tags]]) -> None:
    url, handler = ollama_stand_in
    # The shape of Ollama's GET /api/tags (docs/api.md), trimmed.
    handler.body = json.dumps(
        {
            "models": [
                {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
                {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest", "size": 274302450},
            ]
        }
    ).encode()
    assert init.ollama_models(url) == ["llama3.2:latest", "nomic-embed-text:latest"]
    handler.body = b"not json"
    assert init.ollama_models(url) is None


def test_ollama_models_when_nothing_answers(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert init.ollama_models(f"http://127.0.0.1:{port}", timeout=0.5) is None


def test_detect_asks_ollama_only_when_it_is_installed(home: Path, tmp_path: Path) -> None:
    asked: list[bool] = []

    def tags() -> list[str] | None:
        asked.append(True)
        return ["qwen3:8b"]

    gguf(home / "models" / "x.gguf")
    sources = Sources(home=home, env={"PATH": ""}, ollama=tags, gpus=no_gpus)
    detection = init.detect(sources)
    assert detection.ollama_models is None and not asked
    assert [g.path for g in detection.ggufs] == [home / "models" / "x.gguf"]
    usr = tmp_path / "bin"
    executable(usr / "ollama")
    sources = Sources(home=home, env={"PATH": str(usr)}, ollama=tags, gpus=no_gpus)
    assert init.detect(sources).ollama_models == ["qwen3:8b"]


# --- choosing ---------------------------------------------------------------------------------------------


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


def loads(text: str) -> dict[str, Any]:
    parse_config(text)  # what init writes must pass validation
    data: dict[str, Any] = yaml.safe_load(text)
    return data


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
    assert config["gateway"] == {"command": "/home/u/venvs/litellm/bin/litellm", "port": 4000}
    whats = [c.what for c in plan.choices]
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


# --- the demo -----------------------------------------------------------------------------------------------


def test_demo_config_is_the_demo_stack() -> None:
    text = init.demo_config(
        llama_server=Path("/opt/llama-server"),
        llama_cpp_python=Path("/venvs/l/bin/python"),
        litellm=Path("/venvs/lite llm/bin/litellm"),
        model=Path("/state/smoke.gguf"),
        port_base=18080,
    )
    config = loads(text)
    assert config == {
        "version": 1,
        "backends": {
            "native": {
                "kind": "llama-server", "command": "/opt/llama-server", "port": 18080, "model": "smoke-native", "gpus": []
            },
            "pyserver": {
                "kind": "llama-cpp-python", "command": "/venvs/l/bin/python", "port": 18081, "model": "smoke-py",
                "gpus": [],
            },
        },
        "models": {
            "smoke-native": {"backend": "native", "source": "/state/smoke.gguf", "context": 512},
            "smoke-py": {"backend": "pyserver", "source": "/state/smoke.gguf", "context": 512},
        },
        "gateway": {"command": "/venvs/lite llm/bin/litellm", "port": 18082, "fallbacks": {"smoke-native": ["smoke-py"]}},
    }  # fmt: skip


@pytest.mark.parametrize("value", ["/a b/c", "/x: y", "/yes", "/n#o", "/plain/path-1.0_x"])
def test_scalars_read_back_the_same(value: str) -> None:
    assert yaml.safe_load(f"k: {init._scalar(value)}") == {"k": value}


# --- writing ------------------------------------------------------------------------------------------------


CONFIG_A = "version: 1\n"
CONFIG_B = "version: 1\ngateway:\n  enabled: false\n"


def test_write_new_unchanged_refused_and_forced(tmp_path: Path, paths: Paths) -> None:
    path = tmp_path / "conf" / "llmctl.yaml"
    assert init.write_config(path, CONFIG_A, force=False, paths=paths).action == "written"
    assert path.read_text() == CONFIG_A
    assert init.write_config(path, CONFIG_A, force=False, paths=paths).action == "unchanged"
    with pytest.raises(LlmctlError) as err:
        init.write_config(path, CONFIG_B, force=False, paths=paths)
    assert err.value.exit_code is ExitCode.USAGE and "--force" in (err.value.hint or "")
    assert path.read_text() == CONFIG_A and snapshots.list_snapshots(paths) == []

    path.chmod(0o600)
    result = init.write_config(path, CONFIG_B, force=True, paths=paths)
    assert result.action == "replaced" and result.snapshot is not None
    assert path.read_text() == CONFIG_B and path.stat().st_mode & 0o777 == 0o600
    taken = snapshots.load(paths, result.snapshot)
    manifest = taken.require()
    assert manifest.reason == "before init --force" and manifest.config_path == str(path)
    assert (taken.path / "config" / "llmctl.yaml").read_text() == CONFIG_A


def test_write_refuses_an_invalid_config(tmp_path: Path, paths: Paths) -> None:
    with pytest.raises(LlmctlError):
        init.write_config(tmp_path / "c.yaml", "version: 2\n", force=True, paths=paths)
    assert not (tmp_path / "c.yaml").exists()


def test_force_never_prunes_older_snapshots(tmp_path: Path, paths: Paths) -> None:
    path = tmp_path / "llmctl.yaml"
    path.write_text(CONFIG_A)
    for _ in range(snapshots.DEFAULT_KEEP + 2):
        snapshots.take(paths, path, reason="test", command="test", keep=1000)
    before = {s.id for s in snapshots.list_snapshots(paths)}
    init.write_config(path, CONFIG_B, force=True, paths=paths)
    after = {s.id for s in snapshots.list_snapshots(paths)}
    assert before < after and len(after) == len(before) + 1


def test_the_written_starter_config_validates(tmp_path: Path, paths: Paths) -> None:
    home = tmp_path / "machine"
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "litellm", scripts=("litellm",))
    gguf(home / "models" / "tiny.gguf")
    d = init.detect(machine(home))
    plan = init.plan(d, lambda port: False, home)
    path = tmp_path / "llmctl.yaml"
    init.write_config(path, init.render_plan(plan, d, home), force=False, paths=paths)
    loaded = load_config(path, strict=True)  # every file it names exists
    assert loaded.config.backends["llama-server"].model == "tiny"  # type: ignore[union-attr]


# --- through the CLI ------------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: Paths) -> Path:
    """HOME (the fixture's) with llama-server, LiteLLM and a model; nothing else on PATH."""
    home = paths.home
    executable(home / "llama.cpp" / "build" / "bin" / "llama-server")
    venv(home / "venvs" / "llama", modules=("llama_cpp",))
    venv(home / "venvs" / "litellm", scripts=("litellm",))
    gguf(home / "models" / "tiny.gguf")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(init, "Sources", functools.partial(Sources, ollama=no_ollama, gpus=no_gpus))
    monkeypatch.setattr("llmctl.procs.port_in_use", lambda host, port: False)
    return home


def test_cli_init_writes_shows_and_refuses(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init")
    assert code == 0, err
    assert f"  llama-server: {this_machine}/llama.cpp/build/bin/llama-server (~/llama.cpp/build/bin)" in out
    assert "chose:" in out and "  gateway (LiteLLM, " in out
    assert f"wrote {paths.default_config_file}" in out
    assert load_config(paths.default_config_file, strict=True).config.backends["llama-server"].model == "tiny"  # type: ignore[union-attr]
    assert cli(capsys, "validate", "--strict")[0] == 0

    # Again: the same machine gives the same config.
    code, out, _ = cli(capsys, "init")
    assert code == 0 and "(unchanged)" in out
    # Edited since: refused without --force, kept as it was.
    paths.default_config_file.write_text(paths.default_config_file.read_text() + "# mine\n")
    code, _, err = cli(capsys, "init")
    assert code == 2 and "already exists; not replacing it" in err and "--force" in err
    assert paths.default_config_file.read_text().endswith("# mine\n")
    code, out, _ = cli(capsys, "init", "--force", "--json")
    envelope = json.loads(out)
    assert code == 0 and envelope["data"]["action"] == "replaced"
    snapshot = snapshots.load(paths, envelope["data"]["snapshot"])
    assert (snapshot.path / "config" / "llmctl.yaml").read_text().endswith("# mine\n")
    assert envelope["data"]["found"]["gguf_files"] == [
        {"path": str(this_machine / "models" / "tiny.gguf"), "size_bytes": 64}
    ]


def test_cli_demo_options_need_demo(this_machine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "init", "--port-base", "19000", "--litellm", "/x")
    assert code == 2 and "--port-base, --litellm: only with --demo" in err


def test_cli_demo_from_detection_writes_the_smoke_model(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "init", "--demo", "--port-base", "19000")
    assert code == 0, err
    config = load_config(paths.default_config_file, strict=True).config
    assert config.backends["native"].command == str(
        this_machine / "llama.cpp" / "build" / "bin" / "llama-server"
    )
    assert config.backends["pyserver"].command == str(this_machine / "venvs" / "llama" / "bin" / "python3")
    assert config.gateway.port == 19002
    smoke = paths.state_dir / "demo" / "smoke.gguf"
    assert config.models["smoke-native"].source == str(smoke)
    assert smoke.read_bytes()[:4] == b"GGUF"
    assert f"model: {smoke}: wrote the smoke model (random weights)" in out


def test_cli_demo_with_explicit_paths_and_its_problems(
    tmp_path: Path, this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "demo" / "llmctl.yaml"
    model = gguf(tmp_path / "m.gguf")
    server = executable(tmp_path / "bin" / "llama-server")
    code, _, err = cli(
        capsys, "--config", str(target), "init", "--demo", "--model", str(tmp_path / "nope.gguf"),
        "--llama-server", str(tmp_path / "missing"), "--litellm", str(model),
    )  # fmt: skip
    assert code == 2 and not target.exists()
    assert "--llama-server" in err and "not an executable file" in err and "--model" in err
    code, _, err = cli(
        capsys,
        "--config",
        str(target),
        "init",
        "--demo",
        "--model",
        str(model),
        "--llama-server",
        str(server),
    )
    assert code == 0, err
    assert load_config(target).config.backends["native"].command == str(server)
    assert not (paths.state_dir / "demo").exists()  # --model given: no smoke model written


def test_cli_demo_refuses_before_writing_the_smoke_model(
    this_machine: Path, paths: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    paths.default_config_file.parent.mkdir(parents=True)
    paths.default_config_file.write_text("version: 1\n")
    code, _, err = cli(capsys, "init", "--demo")
    assert code == 2 and "already exists" in err
    assert not (paths.state_dir / "demo" / "smoke.gguf").exists()


def test_cli_demo_needs_the_executables(
    tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, _, err = cli(capsys, "init", "--demo")
    assert code == 2
    assert "llama-server: none found on PATH or in the usual virtualenvs; give --llama-server PATH" in err
    assert "litellm: none found" in err
