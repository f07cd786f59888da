"""Processes and ports: who is in a unit's cgroup, and who holds a port.

psutil (~25 ms to import) is imported only by what needs it (listening sockets): status, the
switch and the readiness gate only read /proc and the cgroup files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where a unit's cgroup directory may be: the unified (v2) tree is mounted at the root, or, on a
# hybrid system, at unified/; a legacy (v1) systemd keeps its units in the name=systemd
# hierarchy at systemd/ (this project's containers). Each lists the unit's processes in
# cgroup.procs files, as a scan of every /proc/PID/cgroup would find them, without the scan.
CGROUP_MOUNTS = ("", "unified", "systemd")
# The llmctl unit in a cgroup path, e.g. ".../app.slice/llmctl-llama.service" (or its socket).
_UNIT_IN_CGROUP = re.compile(r"(?:^|/)(llmctl-[^/]+\.(?:service|socket))(?=/|$)")


def unit_of_pid(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The llmctl unit whose cgroup holds `pid`, if any."""
    try:
        lines = (proc_root / str(pid) / "cgroup").read_text().splitlines()
    except (OSError, ValueError):
        return None
    for line in lines:
        # "0::/user.slice/user-1000.slice/user@1000.service/app.slice/llmctl-llama.service"
        matches = _UNIT_IN_CGROUP.findall(line.split(":", 2)[-1])
        if matches:
            return str(matches[-1])
    return None


def cgroup_pids(control_group: str) -> list[int]:
    """PIDs whose cgroup is `control_group` (as systemd reports it) or below it."""
    return cgroups_pids([control_group]).get(control_group, [])


def cgroups_pids(control_groups: list[str]) -> dict[str, list[int]]:
    """`cgroup_pids` of each of these cgroups, with at most one scan of /proc for them all."""
    found: dict[str, list[int]] = {}
    unmounted = []
    for control_group in filter(None, control_groups):
        # The unit's directory lists its processes; sub-cgroups hold the rest.
        mounted = (CGROUP_ROOT / mount / control_group.lstrip("/") for mount in CGROUP_MOUNTS)
        unit_dir = next((path for path in mounted if path.is_dir()), None)
        if unit_dir is None:
            unmounted.append(control_group)
            continue
        pids: list[int] = []
        for procs_file in unit_dir.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.extend(int(line) for line in procs_file.read_text().split())
        found[control_group] = sorted(pids)
    if unmounted:
        found.update(_scan_proc(unmounted))
    return found


def _scan_proc(control_groups: list[str]) -> dict[str, list[int]]:
    """Slow path: every process's /proc/PID/cgroup (a cgroup tree not mounted where expected),
    read once for all the cgroups asked for."""
    pids: dict[str, list[int]] = {group: [] for group in control_groups}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            lines = (proc_dir / "cgroup").read_text().splitlines()
        except OSError:
            continue
        paths = [line.split(":", 2)[-1] for line in lines]
        for group in control_groups:
            # The path is relative to our cgroup namespace; systemd's may carry a longer prefix.
            if any(p == group or p.endswith(group) or p.startswith(group + "/") for p in paths):
                pids[group].append(int(proc_dir.name))
    return {group: sorted(found) for group, found in pids.items()}


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float
    pids: tuple[int, ...]


def usage(pids: list[int], proc_root: Path = Path("/proc")) -> Usage:
    """Resident memory and CPU time of these processes, from /proc/PID/statm and stat (what
    psutil reads, without its import: `status` calls this for every unit)."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    rss = 0
    cpu = 0.0
    alive = []
    for pid in pids:
        try:
            stat = (proc_root / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
            statm = (proc_root / str(pid) / "statm").read_text(encoding="ascii")
        except OSError:
            continue
        # The name in parentheses may contain spaces and ')'; fields 3 on follow the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 13 or fields[0] == "Z" or len(statm.split()) < 2:
            continue  # a zombie holds no memory
        rss += int(statm.split()[1]) * page
        cpu += (int(fields[11]) + int(fields[12])) / tick  # utime + stime (fields 14, 15)
        alive.append(pid)
    return Usage(rss, cpu, tuple(alive))


ProcessState = Literal["running", "zombie", "gone"]


def process_state(pid: int, proc_root: Path = Path("/proc")) -> ProcessState:
    """'running' (any live state), 'zombie' (exited, not reaped) or 'gone' (no such process)."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "gone"
    # The name in parentheses may contain spaces and ')'; the state follows the last ')'.
    return "zombie" if stat.rpartition(")")[2].split()[:1] == ["Z"] else "running"


def alive(pids: list[int]) -> list[int]:
    """The pids that still run (zombies count as gone: they hold no memory or port)."""
    return [pid for pid in pids if process_state(pid) == "running"]


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for the pids to end; those still running then."""
    deadline = time.monotonic() + timeout
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive(left)
    return left


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a stopped server lingering in TIME_WAIT do not keep the
        # port from being bound again, only a live socket does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_owner(port: int) -> str | None:
    """'name (pid N)' of a process listening on port, if this user can see it."""
    import psutil  # noqa: PLC0415

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None
