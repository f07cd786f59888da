"""llmctl doctor's ports check, and how it learns who holds a port (psutil, the cgroup)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from llmctl import doctor, procs
from llmctl.doctor import Check, PortHolder
from tests.doctor.fakes import good_config, units_of


def test_ports(tmp_path: Path) -> None:
    units = units_of(good_config(tmp_path))  # llama on 8080, gateway (with its socket) on 4000
    busy = {8080, 4000}

    def in_use(host: str, port: int) -> bool:
        return port in busy

    def run(holders: dict[int, list[PortHolder]], running: Callable[[str], bool] | None) -> Check:
        return doctor.check_ports(units, running, in_use, lambda port: holders.get(port, []))

    def none_running(unit: str) -> bool:
        return False

    def socket_running(unit: str) -> bool:
        return unit == "llmctl-gateway.socket"

    assert doctor.check_ports(units, none_running, lambda h, p: False, lambda p: []).status == "ok"
    own = {8080: [PortHolder(10, "llama-server", "llmctl-llama.service")]}
    # The gateway socket is held by the user manager itself: no unit in its cgroup.
    manager = {4000: [PortHolder(1, "systemd", None)]}
    check = run(own | manager, socket_running)
    assert check.status == "ok", check.details
    assert "llama: 127.0.0.1:8080 held by llmctl-llama.service" in check.details

    squatter = {8080: [PortHolder(4242, "python3", None)]}
    check = run(squatter | manager, socket_running)
    assert check.status == "fail" and check.reason == "taken by another process: llama"
    assert "llama: 127.0.0.1:8080 in use by python3 (pid 4242), not by llmctl-llama.service" in check.details

    # Another llmctl unit on our port is not ours either.
    check = run({8080: [PortHolder(5, "x", "llmctl-other.service")]} | manager, lambda unit: True)
    assert check.status == "fail"

    # An owner this user cannot see, while systemd runs our unit: ours.
    assert run({}, lambda unit: True).status == "ok"
    # ... while it does not: someone else's.
    check = run({}, none_running)
    assert check.status == "fail" and "a process this user cannot see" in check.details[0]
    # No manager to ask: a warning.
    check = run(squatter, None)
    assert check.status == "warn" and "cannot ask systemd" in check.details[0]


def test_port_holders_finds_a_real_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        holders = doctor.port_holders(port)
    if not holders:
        pytest.skip("psutil cannot list sockets here")
    assert [h.pid for h in holders] == [os.getpid()]
    assert holders[0].unit is None


def test_unit_of_pid_reads_the_cgroup(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/llmctl-llama.service\n"
    )
    assert procs.unit_of_pid(7, tmp_path) == "llmctl-llama.service"
    assert procs.unit_of_pid(8, tmp_path) is None


def test_port_in_use_counts_listeners_not_time_wait_leftovers() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert procs.port_in_use("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the port stays in TIME_WAIT
    client.close()
    listener.close()
    assert not procs.port_in_use("127.0.0.1", port)
