"""Processes and ports: who is in a unit's cgroup, and who holds a port.

psutil (~25 ms to import) is imported only by what needs it (memory and CPU use, listening
sockets): the switch and the readiness gate only read /proc and the cgroup files.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
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
    if not control_group:
        return []
    # cgroup v2: the unit's directory lists its processes; sub-cgroups hold the rest.
    unit_dir = CGROUP_ROOT / control_group.lstrip("/")
    if unit_dir.is_dir():
        found: list[int] = []
        for procs_file in unit_dir.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found.extend(int(line) for line in procs_file.read_text().split())
        return sorted(found)
    return _scan_proc(control_group)


def _scan_proc(control_group: str) -> list[int]:
    """Slow path: every process's /proc/PID/cgroup (a cgroup tree not mounted where expected)."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            lines = (proc_dir / "cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            path = line.split(":", 2)[-1]
            # The path is relative to our cgroup namespace; systemd's may carry a longer prefix.
            if path == control_group or path.endswith(control_group) or path.startswith(control_group + "/"):
                pids.append(int(proc_dir.name))
                break
    return sorted(pids)


@dataclass(frozen=True)
class Usage:
    rss_bytes: int
    cpu_seconds: float
    pids: tuple[int, ...]


def usage(pids: list[int]) -> Usage:
    import psutil  # noqa: PLC0415

    rss = 0
    cpu = 0.0
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu += times.user + times.system
            alive.append(pid)
        except psutil.Error:
            continue
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
