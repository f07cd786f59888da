"""gateway.cache for real: llmctl-redis.service (Debian's redis-server) under the user manager,
the real LiteLLM caching in it, a real llama-server behind it.

LiteLLM 1.106 answers a cache hit with an `x-litellm-cache-key` header (a miss has none) and
the stored answer (the first answer's id). It keeps an in-process copy in front of Redis, so
a hit that must have come from Redis is one right after the gateway restarted; Redis's own
INFO counters confirm it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from llmctl.backends.redis_cache import command
from llmctl.paths import Paths
from llmctl.secrets import read_redis_password
from llmctl.smoke_model import write_smoke_model
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, json_result, unavailable

REDIS_UNIT = "llmctl-redis.service"
GATEWAY_UNIT = "llmctl-gateway.service"
_prompts = itertools.count()


class CachedStack:
    def __init__(self, root: Path, provisioned: Provisioned, redis_server: str) -> None:
        model = write_smoke_model(root / "smoke.gguf")
        self.gateway_port = free_port()
        self.redis_port = free_port()
        self.config = root / "llmctl.yaml"
        self.data: dict[str, Any] = {
            "version": 1,
            "backends": {
                "native": {
                    "kind": "llama-server",
                    "command": str(provisioned.llama_server),
                    "port": free_port(),
                    "model": "smoke",
                    "gpus": [],
                }
            },
            "models": {"smoke": {"backend": "native", "source": str(model), "context": 512}},
            "gateway": {
                "command": str(provisioned.litellm),
                "port": self.gateway_port,
                "cache": {"type": "redis", "command": redis_server, "port": self.redis_port, "ttl": "10m"},
            },
            # Not under test here; one process less on two cores.
            "supervisor": {"enabled": False},
        }
        self.config.write_text(yaml.safe_dump(self.data))
        self.paths = Paths.from_env()
        self._key: str | None = None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def chat(self, content: str) -> httpx.Response:
        if self._key is None:
            self._key = self.run("gateway", "key").stdout.strip()
        return httpx.post(
            f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self._key}"},
            json={"model": "smoke", "messages": [{"role": "user", "content": content}], "max_tokens": 4},
            timeout=120,
        )

    def redis(self, *words: str) -> str:
        """One command to the stack's Redis with llmctl's password: the raw RESP answer (QUIT
        last, so Redis closes the connection once it has answered)."""
        password = read_redis_password(self.paths.redis_env_file)
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=10) as sock:
            sock.sendall(command("AUTH", password) + command(*words) + command("QUIT"))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"+OK\r\n"), answer[:80]
        return answer[len(b"+OK\r\n") :].decode()

    def redis_keys(self) -> int:
        return int(self.redis("DBSIZE").split(":", 1)[1].split("\r\n", 1)[0])

    def keyspace_hits(self) -> int:
        info = self.redis("INFO", "stats")
        return int(
            next(line for line in info.splitlines() if line.startswith("keyspace_hits:")).split(":")[1]
        )

    def unit(self, name: str) -> dict[str, Any]:
        units = {u["name"]: u for u in json_result(self.run("status", "--json").stdout)["units"]}
        found: dict[str, Any] = units[name]
        return found

    def restart_gateway(self) -> None:
        """A new LiteLLM: its in-process copy of the cache is gone, Redis's is not."""
        restarted = self.run("restart", "gateway")
        assert restarted.returncode == 0, restarted.stderr


FOREIGN_REDIS = ("REDIS_SSL=true", "REDIS_DB=7", "REDIS_USERNAME=someone-else")


def unique_prompt() -> str:
    return f"cache test prompt {next(_prompts)} {time.time_ns()}"


def is_hit(response: httpx.Response) -> bool:
    return bool(response.headers.get("x-litellm-cache-key"))


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, check=False)


def main_pid(unit: str) -> int:
    return int(systemctl("show", "-p", "MainPID", "--value", unit).stdout.strip() or 0)


@pytest.fixture(scope="module")
def stack(
    user_manager: UserManager, provisioned: Provisioned, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CachedStack]:
    # provision.env names it since scripts/provision installs it; older ones do not.
    server = provisioned.env.get("LLMCTL_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not server:
        unavailable("redis-server not installed: run scripts/provision (apt-get install redis-server)")
    the_stack = CachedStack(tmp_path_factory.mktemp("cache"), provisioned, server)
    # REDIS_* meant for other programs, in the manager's environment (environment.d, an
    # import-environment): LiteLLM would read them into its Redis client (TLS to a plain
    # Redis, another database, another user). The gateway passes its children none of them,
    # so every test below runs with them set.
    assert systemctl("set-environment", *FOREIGN_REDIS).returncode == 0
    try:
        up = the_stack.run("up")
        assert up.returncode == 0, up.stderr
        assert "created the password of the gateway's Redis" in up.stdout
        yield the_stack
        the_stack.run("down")
    finally:
        systemctl("unset-environment", *(v.split("=", 1)[0] for v in FOREIGN_REDIS))
        user_manager.forget_llmctl_units()


def test_status_shows_redis_answering_llmctls_password(stack: CachedStack) -> None:
    redis = stack.unit("redis")
    assert (redis["kind"], redis["health"], redis["active_state"]) == ("redis", "ok", "active")
    assert redis["health_detail"].startswith("PONG (") and redis["port"] == stack.redis_port
    logs = stack.run("logs", "redis", "-n", "50")
    assert logs.returncode == 0 and "Ready to accept connections" in logs.stdout, logs.stdout[-2000:]
    doctor = json_result(stack.run("doctor", "--json").stdout)
    checks = {c["name"]: c for c in doctor["checks"]}
    assert checks["redis-password"]["status"] == "ok"
    assert any(
        d.startswith(f"redis (redis): {stack.data['gateway']['cache']['command']}, Redis server v=")
        for d in checks["executables"]["details"]
    )
    assert f"redis: 127.0.0.1:{stack.redis_port} held by {REDIS_UNIT}" in checks["ports"]["details"]


def test_a_second_identical_request_is_answered_from_the_cache(stack: CachedStack) -> None:
    prompt = unique_prompt()
    first = stack.chat(prompt)
    assert first.status_code == 200, first.text
    assert not is_hit(first)
    second = stack.chat(prompt)
    assert second.status_code == 200 and is_hit(second), dict(second.headers)
    assert second.json()["id"] == first.json()["id"]  # the stored answer, not a new one
    # Stored in Redis under that key, for gateway.cache.ttl (10m) at most.
    ttl = stack.redis("TTL", second.headers["x-litellm-cache-key"])
    assert ttl.startswith(":") and 0 < int(ttl[1:].split()[0]) <= 600, ttl
    # From Redis itself: a new LiteLLM has no in-process copy.
    hits = stack.keyspace_hits()
    stack.restart_gateway()
    third = stack.chat(prompt)
    assert third.status_code == 200 and is_hit(third), dict(third.headers)
    assert third.json()["id"] == first.json()["id"]
    assert stack.keyspace_hits() > hits


def test_requests_succeed_while_redis_is_down_and_it_is_used_again_once_back(stack: CachedStack) -> None:
    cached = unique_prompt()
    assert stack.chat(cached).status_code == 200
    assert systemctl("stop", REDIS_UNIT).returncode == 0
    try:
        down = stack.run("status")
        assert down.returncode == 3 and "redis: inactive" in down.stdout, down.stdout
        # A dead cache is skipped: new requests are answered by the model, known ones still work.
        for prompt in (unique_prompt(), unique_prompt(), cached, unique_prompt()):
            response = stack.chat(prompt)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        up = stack.run("up")
        assert up.returncode == 0, up.stderr
    assert "llmctl-redis.service: started" in up.stdout
    assert stack.unit("redis")["health"] == "ok"
    # Used again: new answers reach Redis (LiteLLM retries it a few seconds after it gave up).
    before = stack.redis_keys()
    deadline = time.monotonic() + 120
    prompt = unique_prompt()
    while True:
        assert stack.chat(prompt).status_code == 200
        if stack.redis_keys() > before:
            break
        assert time.monotonic() < deadline, "nothing was written to Redis after it came back"
        prompt = unique_prompt()
        time.sleep(1)
    stack.restart_gateway()
    assert is_hit(stack.chat(prompt))


def test_a_killed_redis_is_restarted_by_systemd_with_its_cache(stack: CachedStack) -> None:
    before = main_pid(REDIS_UNIT)
    assert systemctl("kill", "--signal=SIGKILL", REDIS_UNIT).returncode == 0
    deadline = time.monotonic() + 60
    while not (main_pid(REDIS_UNIT) not in (0, before) and stack.unit("redis")["health"] == "ok"):
        assert time.monotonic() < deadline, "systemd did not restart Redis"
        time.sleep(0.5)
    assert stack.chat(unique_prompt()).status_code == 200


def test_the_password_is_in_0600_files_only(stack: CachedStack, user_manager: UserManager) -> None:
    paths = stack.paths
    password = read_redis_password(paths.redis_env_file)
    for secret in (paths.redis_env_file, paths.redis_auth_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(paths.redis_data_dir.stat().st_mode) == 0o700
    assert (paths.redis_data_dir / "cache.rdb").exists() or stack.redis("SAVE").startswith("+OK")
    assert stat.S_IMODE((paths.redis_data_dir / "cache.rdb").stat().st_mode) == 0o600  # UMask=0077
    places = [*user_manager.unit_dir.glob("llmctl*"), paths.gateway_file, paths.redis_conf_file]
    for place in places:
        assert password not in place.read_text(), place
    for unit in (REDIS_UNIT, GATEWAY_UNIT):
        shown = systemctl("show", unit).stdout
        assert password not in shown, unit
        # The unit's main process and everything it started (the gateway's LiteLLM).
        main = psutil.Process(main_pid(unit))
        for process in (main, *main.children(recursive=True)):
            assert password not in " ".join(process.cmdline()), (unit, process.pid)
    journal = subprocess.run(
        ["journalctl", "--no-pager", "--user-unit", REDIS_UNIT, "--user-unit", GATEWAY_UNIT],
        capture_output=True,
        text=True,
        check=False,
    )
    assert journal.stdout and password not in journal.stdout
    for root, _, files in os.walk(paths.state_dir / "snapshots"):
        for name in files:
            assert password.encode() not in (Path(root) / name).read_bytes(), name


def test_a_new_redis_setting_restarts_redis_only_and_is_snapshotted(stack: CachedStack) -> None:
    redis_before, gateway_before = main_pid(REDIS_UNIT), main_pid(GATEWAY_UNIT)
    stack.data["gateway"]["cache"]["maxmemory"] = "64mb"
    stack.config.write_text(yaml.safe_dump(stack.data))
    up = stack.run("up", "--json")
    assert up.returncode == 0, up.stderr
    data = json_result(up.stdout)
    assert [f["path"] for f in data["files"]] == ["llmctl/redis.conf"]
    actions = {u["unit"]: u["action"] for u in data["units"]}
    assert actions[REDIS_UNIT] == "restarted" and actions[GATEWAY_UNIT] == "unchanged"
    assert main_pid(GATEWAY_UNIT) == gateway_before and main_pid(REDIS_UNIT) != redis_before
    assert "maxmemory\r\n$8\r\n67108864" in stack.redis("CONFIG", "GET", "maxmemory")
    shown = json_result(stack.run("snapshot", "show", data["snapshot"], "--json").stdout)
    # The previous redis.conf (the setting before), never a file with the password.
    assert "installed/llmctl/redis.conf" in shown["files"]
    assert not [key for key in shown["files"] if "redis.env" in key or "redis-auth" in key]
    # Rolled back: the old redis.conf, and a Redis restarted on it.
    restarted = main_pid(REDIS_UNIT)
    rollback = stack.run("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert main_pid(REDIS_UNIT) not in (0, restarted)
    assert "maxmemory\r\n$9\r\n268435456" in stack.redis("CONFIG", "GET", "maxmemory")
    assert main_pid(GATEWAY_UNIT) == gateway_before


def test_down_stops_redis_and_frees_its_port(stack: CachedStack) -> None:
    down = stack.run("down")
    assert down.returncode == 0, down.stderr
    assert "llmctl-redis.service: stopped" in down.stdout
    assert systemctl("is-active", REDIS_UNIT).stdout.strip() in ("inactive", "failed")
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", stack.redis_port)) != 0
