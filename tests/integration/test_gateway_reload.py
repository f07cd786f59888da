"""The gateway's config changes without dropping a request: real LiteLLM, real systemd user manager.

The backends are stdlib stand-ins for OpenAI-compatible servers; each answers every chat
completion with its own tag, so a response says which route served it. Config A routes
`alpha` to b1 and `beta` to b2; config B routes `alpha` to b2, drops `beta` and adds `gamma` (b1);
both route `slow` (a 3-s answer, so that requests are in flight at the switch). Everything is rendered by llmctl's own
render code and installed as llmctl-gateway.socket + llmctl-gateway.service.

One gateway is started for the module (LiteLLM takes 6-18 s to start here) and reloaded by the
tests in order. Run: scripts/with-user-manager -- .venv/bin/pytest -s tests/integration/test_gateway_reload.py
(-s shows the measurements).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import systemd
from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.fsutil import atomic_write
from llmctl.gateway_runtime import LITELLM_HOOKS_DIR, state_file
from llmctl.gateway_runtime.interpreter import litellm_python
from llmctl.gateway_runtime.reload import reload_wait
from llmctl.gateway_runtime.state import read_state
from llmctl.paths import Paths
from llmctl.render.units import GATEWAY_SOCKET, GATEWAY_UNIT, RenderOptions, render_stack
from llmctl.secrets import ensure_gateway_key, read_gateway_key
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "llmctl.example.yaml"
GATEWAY_FILES = (f"systemd/user/{GATEWAY_SOCKET}", f"systemd/user/{GATEWAY_UNIT}", "llmctl/gateway.yaml")
SLOW_SECONDS = 3.0
REQUEST_TIMEOUT = 60.0


# --- stand-in backends ------------------------------------------------------------------------


class DummyBackend:
    """An OpenAI-compatible server that answers every chat completion with its tag."""

    def __init__(self, tag: str, delay: float = 0.0) -> None:
        self.tag = tag
        self.requests = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": backend.tag, "object": "model"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                backend.requests += 1
                time.sleep(delay)
                self._send(
                    {
                        "id": f"chatcmpl-{backend.tag}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": backend.tag,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": backend.tag},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                )

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, DummyBackend]]:
    servers = {tag: DummyBackend(tag) for tag in ("b1", "b2")}
    servers["slow"] = DummyBackend("slow", SLOW_SECONDS)
    yield servers
    for server in servers.values():
        server.close()


def llmctl_config(
    litellm: Path,
    gateway_port: int,
    backends: dict[str, DummyBackend],
    routes: dict[str, str],
    **gateway: Any,
) -> Config:
    """A config whose backends are the stand-ins: `routes` maps model id -> backend tag."""
    config = {
        "version": 1,
        "backends": {
            tag: {"kind": "llama-server", "command": "/bin/true", "port": backends[tag].port, "model": model}
            for model, tag in routes.items()
        },
        "models": {
            model: {"backend": tag, "source": f"/models/{model}.gguf"} for model, tag in routes.items()
        },
        "gateway": {"command": str(litellm), "port": gateway_port, **gateway},
    }
    parsed, _ = parse_config(yaml.safe_dump(config))
    return parsed


# The same three backends in both (so the units do not change, only gateway.yaml), each now
# serving another model: `alpha` moves from b1 to b2, `beta` goes, `gamma` comes.
ROUTES_A = {"alpha": "b1", "beta": "b2", "slow": "slow"}
ROUTES_B = {"alpha": "b2", "gamma": "b1", "slow": "slow"}


# --- clients ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    kind: str  # new (a connection per request) | keepalive | slow (new connections, 3-s model)
    start: float
    end: float
    content: str | None
    error: str | None


@dataclass
class Load:
    """Clients without retries: each request's outcome is recorded as it happened."""

    port: int
    key: str
    new: int = 23
    keepalive: int = 25
    slow: int = 2
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stopping = threading.Event()
        kinds = ["new"] * self.new + ["keepalive"] * self.keepalive + ["slow"] * self.slow
        self.threads = [threading.Thread(target=self._client, args=(kind,), daemon=True) for kind in kinds]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        deadline = time.monotonic() + REQUEST_TIMEOUT + 5
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"

    def _client(self, kind: str) -> None:
        body = json.dumps(
            {"model": "slow" if kind == "slow" else "alpha", "messages": [{"role": "user", "content": "hi"}]}
        )
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        conn: http.client.HTTPConnection | None = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            start = time.monotonic()
            content = error = None
            try:
                conn.request("POST", "/v1/chat/completions", body, headers)
                response = conn.getresponse()
                data = response.read()
                if response.status == 200:
                    content = json.loads(data)["choices"][0]["message"]["content"]
                else:
                    error = f"HTTP {response.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
                error = repr(err)
            self.results.append(Result(kind, start, time.monotonic(), content, error))
            if error is not None or kind != "keepalive":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def failures(self, kind: str | None = None) -> list[Result]:
        return [r for r in self.results if r.error is not None and kind in (None, r.kind)]

    def summary(self, since: float | None = None) -> str:
        by_kind = {k: sum(r.kind == k for r in self.results) for k in ("new", "keepalive", "slow")}
        fast = sorted((r for r in self.results if r.kind != "slow"), key=lambda r: r.end - r.start)
        text = f"{len(self.results)} requests ({by_kind}), {len(self.failures())} failed"
        if fast:
            median = fast[len(fast) // 2]
            text += f"; median {median.end - median.start:.3f} s"
            origin = self.started if since is None else since
            text += ", longest: " + ", ".join(
                f"{r.end - r.start:.2f} s ({r.kind}, sent at {r.start - origin:+.1f} s)" for r in fast[:-4:-1]
            )
        return text


# --- the installed gateway --------------------------------------------------------------------


def systemctl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def show(unit: str, *props: str) -> dict[str, str]:
    out = systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(unit: str) -> str:
    return "\n".join(systemd.journal_tail(unit, 60))


@dataclass
class Gateway:
    paths: Paths
    port: int
    key: str
    config_path: Path
    litellm: Path
    backends: dict[str, DummyBackend]
    start_seconds: float

    def files(self, routes: dict[str, str]) -> dict[str, str]:
        config = llmctl_config(self.litellm, self.port, self.backends, routes)
        return render_stack(config, RenderOptions(config_path=self.config_path, paths=self.paths)).files

    def install(self, files: dict[str, str]) -> None:
        for rel in GATEWAY_FILES:
            atomic_write(self.paths.config_home / rel, files[rel])

    def write_gateway_file(self, text: str) -> None:
        atomic_write(self.paths.gateway_file, text)

    def reload(self) -> tuple[subprocess.CompletedProcess[str], float, float]:
        """systemctl --user reload: (its result, seconds it took, monotonic time it returned)."""
        started = time.monotonic()
        result = systemctl("reload", GATEWAY_UNIT)
        returned = time.monotonic()
        return result, returned - started, returned

    def state(self) -> dict[str, Any]:
        path = state_file()
        assert path is not None
        state = read_state(path)
        assert state is not None, f"no state in {path}"
        return state

    def post(self, model: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
            headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            conn.request("POST", "/v1/chat/completions", body, headers)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def chat(self, model: str) -> str:
        status, body = self.post(model)
        assert status == 200, body[:500]
        content: str = json.loads(body)["choices"][0]["message"]["content"]
        return content


@pytest.fixture(scope="module")
def gateway(
    user_manager: UserManager,
    provisioned: Provisioned,
    backends: dict[str, DummyBackend],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    paths = Paths.from_env()
    assert paths.unit_dir == user_manager.unit_dir
    config_path = tmp_path_factory.mktemp("gateway-reload") / "llmctl.yaml"
    config_path.write_text("# the tests render from Config objects; this path is only named in the units\n")
    created_key = ensure_gateway_key(paths.gateway_env_file)
    gw = Gateway(
        paths,
        free_port(),
        read_gateway_key(paths.gateway_env_file),
        config_path,
        provisioned.litellm,
        backends,
        0.0,
    )
    gw.install(gw.files(ROUTES_A))
    try:
        assert systemctl("daemon-reload").returncode == 0
        started = time.monotonic()
        result = systemctl("start", GATEWAY_SOCKET, GATEWAY_UNIT)
        gw.start_seconds = time.monotonic() - started
        assert result.returncode == 0, f"{result.stderr}\n{journal(GATEWAY_UNIT)}"
        print(
            f"\n[gateway] systemctl --user start (socket + service) returned after {gw.start_seconds:.1f} s"
        )
        yield gw
    finally:
        systemctl("stop", GATEWAY_UNIT, GATEWAY_SOCKET)
        for rel in GATEWAY_FILES:
            (paths.config_home / rel).unlink(missing_ok=True)
        if created_key:
            paths.gateway_env_file.unlink(missing_ok=True)
        systemctl("daemon-reload")
        systemctl("reset-failed")


# --- tests ------------------------------------------------------------------------------------


def test_litellm_validates_our_rendered_gateway_yaml(
    provisioned: Provisioned, backends: dict[str, DummyBackend], tmp_path: Path
) -> None:
    """LiteLLM's own --validate_config accepts what llmctl renders: the example, and fallbacks."""
    example, _ = parse_config(
        EXAMPLE.read_text().replace("~/venvs/litellm/bin/litellm", str(provisioned.litellm))
    )
    with_fallbacks = llmctl_config(
        provisioned.litellm, free_port(), backends, ROUTES_B, fallbacks={"alpha": ["gamma", "slow"]}
    )
    runs = []
    for name, config in (("example", example), ("fallbacks", with_fallbacks)):
        files = render_stack(
            config, RenderOptions(config_path=tmp_path / "c.yaml", paths=Paths.from_env())
        ).files
        path = tmp_path / f"{name}.yaml"
        path.write_text(files["llmctl/gateway.yaml"])
        models = len(yaml.safe_load(path.read_text())["model_list"])
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": "sk-" + "0" * 48,
            "CLOUD_KEY": "sk-cloud",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MODE": "PRODUCTION",
            # gateway.yaml's custom_auth module: the gateway's child puts it on LiteLLM's path.
            "PYTHONPATH": str(LITELLM_HOOKS_DIR),
        }
        argv = [str(provisioned.litellm), "--config", str(path), "--validate_config"]
        process = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        runs.append((name, path, models, process))
    assert "fallbacks" in yaml.safe_load((tmp_path / "fallbacks.yaml").read_text())["router_settings"]
    for name, path, models, process in runs:
        out = process.communicate(timeout=120)[0].decode(errors="replace")
        assert process.returncode == 0, f"{name}: {out[-3000:]}\n{path.read_text()}"
        assert f"LiteLLM: config OK ({models} models)" in out, out[-3000:]


def test_gateway_starts_on_its_socket_and_the_key_stays_out_of_argv_and_units(
    gateway: Gateway, user_manager: UserManager
) -> None:
    props = show(GATEWAY_UNIT, "ActiveState", "Type", "MainPID", "StatusText", "NRestarts")
    assert props["ActiveState"] == "active" and props["Type"] == "notify"
    assert show(GATEWAY_SOCKET, "ActiveState")["ActiveState"] == "active"
    state = gateway.state()
    assert state["socket_activated"] is True and state["listen"] == f"127.0.0.1:{gateway.port}"
    assert state["supervisor_pid"] == int(props["MainPID"]) and state["serving"]["generation"] == 1
    assert props["StatusText"].startswith("generation 1 (pid ")
    assert gateway.chat("alpha") == "b1" and gateway.chat("beta") == "b2"
    key = gateway.key.encode()
    processes = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            processes += 1
            assert key not in cmdline, f"the master key is in the argv of pid {proc.name}"
    assert processes > 3
    child = Path(f"/proc/{state['serving']['pid']}/environ").read_bytes()
    assert b"LITELLM_MASTER_KEY=" + key in child.split(b"\0"), "LiteLLM gets the key from its environment"
    for path in [*user_manager.unit_dir.iterdir(), gateway.paths.gateway_file]:
        assert key not in path.read_bytes(), path


def test_reload_under_load_drops_nothing_and_retires_the_old_route(gateway: Gateway) -> None:
    files_b = gateway.files(ROUTES_B)
    files_a = gateway.files(ROUTES_A)
    # Only gateway.yaml differs: this is the change `llmctl up` applies with a reload.
    assert [rel for rel in GATEWAY_FILES if files_a[rel] != files_b[rel]] == ["llmctl/gateway.yaml"]
    before = show(GATEWAY_UNIT, "MainPID", "NRestarts")
    old_child = gateway.state()["serving"]["pid"]
    with Load(gateway.port, gateway.key) as load:
        time.sleep(2)
        gateway.install(files_b)
        result, took, returned = gateway.reload()
        time.sleep(3)
    summary = load.summary(since=returned - took)
    print(
        f"\n[gateway] reload under load: returned {result.returncode} after {took:.1f} s; {summary} (times from the reload)"
    )
    assert result.returncode == 0, f"{result.stderr}\n{journal(GATEWAY_UNIT)}"
    failures = load.failures()
    assert not failures, f"{len(failures)} failed: {failures[:5]}"
    alpha = [r for r in load.results if r.kind != "slow"]
    assert len(alpha) > 200 and {r.content for r in alpha} == {"b1", "b2"}
    late_b1 = [r for r in alpha if r.start >= returned and r.content == "b1"]
    assert not late_b1, f"{len(late_b1)} requests sent after the reload returned were routed to b1"
    assert all(r.content == "slow" for r in load.results if r.kind == "slow")
    assert gateway.chat("gamma") == "b1" and gateway.chat("alpha") == "b2"
    status, body = gateway.post("beta")
    assert status == 400 and "beta" in body, (status, body)  # no longer routed

    state = gateway.state()
    assert state["status"] == "serving" and state["serving"]["generation"] == 2
    assert state["last_reload"]["status"] == "succeeded"
    assert (
        state["serving"]["config_sha256"]
        == hashlib.sha256(files_b["llmctl/gateway.yaml"].encode()).hexdigest()
    )
    # The old generation has drained and exited before `systemctl reload` returned.
    assert not Path(f"/proc/{old_child}").exists()
    after = show(GATEWAY_UNIT, "MainPID", "NRestarts", "StatusText", "ActiveState")
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
    assert after["ActiveState"] == "active" and "reload 1 succeeded" in after["StatusText"]
    print(
        f"[gateway] generation 2 ready after {state['serving']['ready_after_s']} s; "
        f"reload {state['last_reload']['duration_s']} s (supervisor's measure)"
    )


BROKEN = """\
model_list:
  - model_name: alpha
    litellm_params:
      api_base: http://127.0.0.1:9/v1
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""


def test_a_broken_config_fails_the_reload_and_the_old_routes_keep_serving(gateway: Gateway) -> None:
    good = gateway.paths.gateway_file.read_text()
    serving = gateway.state()["serving"]
    keeps = f"generation {serving['generation']} keeps serving"
    try:
        with Load(gateway.port, gateway.key, new=5, keepalive=5, slow=0) as load:
            time.sleep(1)
            gateway.write_gateway_file(BROKEN)
            broken, took_broken, _ = gateway.reload()
            after_broken = gateway.state()
            gateway.paths.gateway_file.unlink()
            missing, took_missing, _ = gateway.reload()
            time.sleep(1)
    finally:
        gateway.write_gateway_file(good)
    print(
        f"\n[gateway] broken config: reload returned {broken.returncode} after {took_broken:.1f} s; "
        f"missing file: {missing.returncode} after {took_missing:.1f} s; {load.summary()}"
    )
    assert broken.returncode != 0 and missing.returncode != 0
    assert not load.failures(), load.failures()[:5]
    assert {r.content for r in load.results} == {"b2"}
    # LiteLLM rejects the model entry without litellm_params.model: its lifespan fails (exit 3).
    error = after_broken["last_reload"]["error"]
    assert after_broken["last_reload"]["status"] == "failed", after_broken
    assert (
        error == f"generation {serving['generation'] + 1} exited with status 3 before it was ready; {keeps}"
    )
    state = gateway.state()
    assert state["serving"] == serving, "the old generation still serves"
    assert state["last_reload"]["status"] == "failed" and "does not exist" in state["last_reload"]["error"]
    assert state["reloads"]["failed"] == 2
    props = show(GATEWAY_UNIT, "ActiveState", "StatusText")
    assert props["ActiveState"] == "active" and "FAILED" in props["StatusText"]
    assert gateway.chat("alpha") == "b2"


def test_a_crashed_litellm_restarts_the_service_while_the_socket_queues(gateway: Gateway) -> None:
    before = show(GATEWAY_UNIT, "MainPID", "NRestarts")
    child = gateway.state()["serving"]["pid"]
    os.kill(child, signal.SIGKILL)
    # The supervisor exits 1; systemd restarts it after RestartSec=. Meanwhile the socket unit
    # holds the port: a request sent now waits in its queue and is answered by the new process.
    sent = time.monotonic()
    status, body = gateway.post("alpha")
    waited = time.monotonic() - sent
    print(f"\n[gateway] LiteLLM killed: a request sent at once was answered after {waited:.1f} s ({status})")
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "b2", body[:500]
    after = show(GATEWAY_UNIT, "MainPID", "NRestarts", "ActiveState")
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    state = gateway.state()
    assert state["serving"]["generation"] == 1 and state["supervisor_pid"] == int(after["MainPID"])


def test_without_the_drain_keep_alive_clients_fail(
    provisioned: Provisioned, backends: dict[str, DummyBackend], tmp_path: Path
) -> None:
    """The regression guard for the child's drain: switch it off, and keep-alive requests fail.

    (uvicorn's own shutdown closes every keep-alive connection between two requests; the client's
    next request on it gets a reset. With the drain, the test above sees none.)
    """
    port = free_port()
    key = "sk-" + "1" * 48
    gateway_file = tmp_path / "gateway.yaml"

    def render(routes: dict[str, str]) -> str:
        config = llmctl_config(provisioned.litellm, port, backends, routes)
        return render_stack(
            config, RenderOptions(config_path=tmp_path / "c.yaml", paths=Paths.from_env())
        ).files["llmctl/gateway.yaml"]

    gateway_file.write_text(render(ROUTES_A))
    runtime = tmp_path / "run"
    argv = [
        *LLMCTL, "gateway", "serve",
        "--litellm-python", str(litellm_python(provisioned.litellm)),
        "--config", str(gateway_file),
        "--runtime-dir", str(runtime),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LLMCTL_GATEWAY_DRAIN": "0"}
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while (read_state(runtime / "state.json") or {}).get("status") != "serving":
            assert supervisor.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with Load(port, key, new=5, keepalive=25, slow=0) as load:
            time.sleep(2)
            gateway_file.write_text(render(ROUTES_B))
            outcome = reload_wait(supervisor.pid, runtime / "state.json", 170)
            time.sleep(1)
        print(f"\n[gateway] without the drain: {outcome.message}; {load.summary()}")
        assert outcome.ok, log.read_text()[-3000:]
        assert "drain disabled" in log.read_text()
        failed = load.failures("keepalive")
        assert failed, f"no keep-alive request failed without the drain: {load.summary()}"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(90)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
