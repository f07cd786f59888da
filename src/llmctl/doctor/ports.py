"""Doctor check on the ports the stack listens on: each is free, or held by its own unit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import procs
from llmctl.doctor.report import Check

if TYPE_CHECKING:
    from llmctl.stack import StackUnit


@dataclass(frozen=True)
class PortHolder:
    pid: int
    name: str
    unit: str | None  # the llmctl unit whose cgroup holds the process, if any


def check_ports(
    units: Sequence[StackUnit],
    running: Callable[[str], bool] | None,
    in_use: Callable[[str, int], bool],
    holders: Callable[[int], list[PortHolder]],
) -> Check:
    """Each port is free, or held by its own unit (for the gateway: by its socket unit).

    `running(unit)` says whether systemd runs a unit; None when the manager cannot be asked.
    """
    if not units:
        return Check("ports", "ok", "no ports configured")
    details = []
    bad = []
    unsure = []
    for unit in units:
        where = f"{unit.name}: {unit.host}:{unit.port}"
        if not in_use(unit.host, unit.port):
            details.append(f"{where} free")
            continue
        found = holders(unit.port)
        own = {unit.unit, *unit.companions}
        if any(h.unit in own for h in found):
            details.append(f"{where} held by {unit.unit}")
            continue
        strangers = [h for h in found if h.unit is None or h.unit not in own]
        ours_running = running is not None and any(running(u) for u in own)
        if ours_running and not [h for h in strangers if h.unit is not None]:
            # The socket's listener is the user manager itself; an unreadable owner is
            # another user's process only if systemd does not run our unit.
            details.append(f"{where} held by {unit.unit}")
            continue
        who = ", ".join(f"{h.name} (pid {h.pid}{', ' + h.unit if h.unit else ''})" for h in strangers)
        who = who or "a process this user cannot see"
        if running is None:
            unsure.append(unit.name)
            details.append(f"{where} in use by {who}; cannot ask systemd whether it is {unit.unit}")
        else:
            bad.append(unit.name)
            details.append(f"{where} in use by {who}, not by {unit.unit}")
    if bad:
        return Check(
            "ports",
            "fail",
            f"taken by another process: {', '.join(bad)}",
            fix="stop the other process (ss -ltnp shows it), or change `port:` in the config",
            details=tuple(details),
        )
    if unsure:
        return Check(
            "ports",
            "warn",
            f"in use, owner unknown: {', '.join(unsure)}",
            fix="ss -ltnp",
            details=tuple(details),
        )
    return Check("ports", "ok", "every port is free or held by its own unit", details=tuple(details))


def port_holders(port: int, proc_root: Path = Path("/proc")) -> list[PortHolder]:
    """Processes listening on `port` that this user can see, with their llmctl unit."""
    import psutil  # noqa: PLC0415

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return []
    found: dict[int, PortHolder] = {}
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port or not conn.pid:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        found[conn.pid] = PortHolder(conn.pid, name, procs.unit_of_pid(conn.pid, proc_root))
    return list(found.values())
