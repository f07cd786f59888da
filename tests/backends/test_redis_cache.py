"""The Redis probe: AUTH + PING + DBSIZE in RESP, judged by the answers (a stand-in server for
each answer Redis can give, and the real redis-server on the config llmctl renders)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from llmctl.backends.base import Health
from llmctl.backends.redis_cache import command, probe_installed, probe_redis
from llmctl.config.cache import GatewayCache
from llmctl.paths import Paths
from llmctl.render.redis_conf import render_redis_conf
from llmctl.secrets import ensure_redis_password, read_redis_password
from tests.conftest import free_port


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert command("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command("AUTH", "pä ss") == b"*2\r\n$4\r\nAUTH\r\n$6\r\np\xc3\xa4 ss\r\n"


class StandIn:
    """A TCP server that answers every connection with `reply` and records what it got."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.received = b""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(2)
            try:
                while b"DBSIZE" not in self.received:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    self.received += chunk
                if self.reply is not None:
                    conn.sendall(self.reply)
                    return
                time.sleep(1)  # never answers (within the probe's timeout)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[StandIn]:
    server = StandIn(request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("stand_in", "health", "detail"),
    [
        (b"+OK\r\n+PONG\r\n:42\r\n", Health.OK, "PONG (42 keys)"),
        (b"-WRONGPASS invalid username-password pair\r\n-NOAUTH x\r\n-NOAUTH x\r\n", Health.DOWN,
         "refuses llmctl's password (WRONGPASS)"),
        (b"-LOADING Redis is loading the dataset in memory\r\n" * 3, Health.LOADING, "loading its data (LOADING)"),
        (b"+OK\r\n-MISCONF something\r\n:0\r\n", Health.DOWN, "answered MISCONF something"),
        (b"+OK\r\n+NOTPONG\r\n:0\r\n", Health.DOWN, "answered '+NOTPONG' to PING"),
        (b"+OK\r\n", Health.DOWN, "Redis closed the connection"),
    ],
    indirect=["stand_in"],
)  # fmt: skip
def test_each_answer_is_judged(stand_in: StandIn, health: Health, detail: str) -> None:
    probe = probe_redis("127.0.0.1", stand_in.port, "s3cret-password", timeout=2)
    assert (probe.health, probe.detail) == (health, detail)
    assert stand_in.received.startswith(command("AUTH", "s3cret-password"))


@pytest.mark.parametrize("stand_in", [None], indirect=True)
def test_a_redis_that_does_not_answer_is_down_after_the_timeout(stand_in: StandIn) -> None:
    probe = probe_redis("127.0.0.1", stand_in.port, "pw", timeout=0.2)
    assert (probe.health, probe.detail) == (Health.DOWN, "no answer in 0.2 s")


def test_nothing_listening_is_down() -> None:
    probe = probe_redis("127.0.0.1", free_port(), "pw", timeout=1)
    assert (probe.health, probe.detail) == (Health.DOWN, "connection refused")


@pytest.mark.parametrize("stand_in", [b"-NOAUTH Authentication required.\r\n:0\r\n"], indirect=True)
def test_without_a_password_file_it_pings_and_says_what_is_missing(stand_in: StandIn, paths: Paths) -> None:
    probe = probe_installed("127.0.0.1", stand_in.port, paths.redis_env_file, timeout=2)
    assert probe.health is Health.DOWN
    assert probe.detail == "wants a password, and llmctl has none (redis.env)"
    assert b"AUTH" not in stand_in.received


# --- the real redis-server, on the redis.conf llmctl renders -----------------------------------


@pytest.fixture
def real_redis(paths: Paths) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not installed (scripts/provision installs it)")
    port = free_port()
    paths.redis_data_dir.mkdir(parents=True, mode=0o700)
    ensure_redis_password(paths.redis_env_file, paths.redis_auth_file)
    conf = paths.redis_conf_file
    conf.write_text(render_redis_conf(GatewayCache(type="redis", port=port), paths, "/c.yaml"))
    # Not under systemd here: `supervised systemd` finds no NOTIFY_SOCKET, says so and runs on.
    process = subprocess.Popen(
        [server, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=paths.home
    )
    try:
        deadline = time.monotonic() + 10
        while probe_redis("127.0.0.1", port, None, timeout=1).detail == "connection refused":
            assert process.poll() is None, "redis-server exited: the rendered redis.conf is refused"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_real_redis_answers_llmctls_password_only(real_redis: int, paths: Paths) -> None:
    ok = probe_installed("127.0.0.1", real_redis, paths.redis_env_file)
    assert (ok.health, ok.detail) == (Health.OK, "PONG (0 keys)")
    wrong = probe_redis("127.0.0.1", real_redis, "not-the-password")
    assert (wrong.health, wrong.detail) == (Health.DOWN, "refuses llmctl's password (WRONGPASS)")
    none = probe_redis("127.0.0.1", real_redis, None)
    assert none.health is Health.DOWN and "NOAUTH" not in none.detail


def test_the_real_redis_listens_on_loopback_only_and_is_protected(real_redis: int, paths: Paths) -> None:
    password = read_redis_password(paths.redis_env_file)
    with socket.create_connection(("127.0.0.1", real_redis), timeout=5) as sock:
        sock.sendall(
            command("AUTH", password)
            + command("CONFIG", "GET", "bind")
            + command("CONFIG", "GET", "protected-mode")
            + command("CONFIG", "GET", "dir")
        )
        time.sleep(0.2)
        answer = sock.recv(65536).decode()
    assert "127.0.0.1 -::1" in answer
    assert "protected-mode\r\n$3\r\nyes" in answer
    assert str(paths.redis_data_dir) in answer
