"""`llmctl status` judges the installed units without the config when the config is the one
they were rendered from, and says the same as when it reads the config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmctl import procs, status, systemd
from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.paths import Paths
from llmctl.render.units import render_stack
from llmctl.state import applied_config_file
from tests.render.test_units import EXAMPLE, fixed_options


def nothing_runs(units: list[str]) -> dict[str, systemd.UnitState]:
    return {
        u: systemd.UnitState(u, "loaded", "inactive", "dead", 0, 0, "success", "", 0, "enabled")
        for u in units
    }


def install_example(tmp_path: Path) -> tuple[Paths, Path, Config]:
    """The example config, applied: its units and gateway file installed, its copy recorded."""
    text = EXAMPLE.read_text().replace("~/", "/home/user/")
    config, _ = parse_config(text)
    paths = Paths(home=tmp_path, config_home=tmp_path / "config", state_home=tmp_path / "state")
    for relative, content in render_stack(config, fixed_options(tmp_path / "llmctl.yaml")).files.items():
        (paths.config_home / relative).parent.mkdir(parents=True, exist_ok=True)
        (paths.config_home / relative).write_text(content)
    config_path = tmp_path / "llmctl.yaml"
    config_path.write_text(text)
    applied_config_file(paths.state_dir).parent.mkdir(parents=True, exist_ok=True)
    applied_config_file(paths.state_dir).write_text(text)
    return paths, config_path, config


def rows(result: status.StackStatus) -> list[tuple[object, ...]]:
    return [(u.name, u.unit, u.kind, u.port, u.models, u.health, u.health_detail) for u in result.units]


def test_an_applied_config_is_not_loaded_and_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, config_path, config = install_example(tmp_path)
    monkeypatch.setattr(systemd, "show", nothing_runs)

    def load() -> tuple[Config, dict[str, str]]:
        raise AssertionError("the config was loaded")

    fast = status.collect_current(paths, config_path, load)
    slow = status.collect(config, {}, config_home=paths.config_home, state_dir=paths.state_dir)
    assert rows(fast) == rows(slow)
    assert {u.kind for u in fast.units} >= {"llama-server", "llama-cpp-python", "ollama", "vllm", "gateway"}
    gateway = next(u for u in fast.units if u.kind == "gateway")
    assert gateway.models and gateway.models == next(u for u in slow.units if u.kind == "gateway").models


def test_an_edited_config_is_loaded_and_its_change_is_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, config_path, config = install_example(tmp_path)
    monkeypatch.setattr(systemd, "show", nothing_runs)
    config_path.write_text(config_path.read_text() + "\n# edited\n")
    loads: list[bool] = []

    def load() -> tuple[Config, dict[str, str]]:
        loads.append(True)
        return config, {}

    status.collect_current(paths, config_path, load)
    assert loads == [True]


def test_usage_is_what_the_kernel_says_of_the_processes() -> None:
    psutil = pytest.importorskip("psutil")
    me = psutil.Process(os.getpid())
    before = me.cpu_times()
    used = procs.usage([os.getpid(), 999_999_999])  # the second does not exist
    assert used.pids == (os.getpid(),)
    assert abs(used.cpu_seconds - (before.user + before.system)) < 0.5
    assert 0.5 < used.rss_bytes / me.memory_info().rss < 2


def test_one_scan_finds_the_processes_of_each_cgroup() -> None:
    mine = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines())
    found = procs.cgroups_pids([mine, "/no/such.slice/llmctl-none.service"])
    assert os.getpid() in found[mine]
    assert found.get("/no/such.slice/llmctl-none.service", []) == []


def test_redis_reads_the_same_from_its_installed_unit_and_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = EXAMPLE.read_text().replace("~/", "/home/user/")
    text = text.replace(
        "gateway:\n",
        "gateway:\n  cache:\n    type: redis\n    port: 6391\n    command: /usr/bin/redis-server\n",
        1,
    )
    config, _ = parse_config(text)
    paths = Paths(home=tmp_path, config_home=tmp_path / "config", state_home=tmp_path / "state")
    for relative, content in render_stack(config, fixed_options(tmp_path / "llmctl.yaml")).files.items():
        (paths.config_home / relative).parent.mkdir(parents=True, exist_ok=True)
        (paths.config_home / relative).write_text(content)
    applied_config_file(paths.state_dir).parent.mkdir(parents=True, exist_ok=True)
    applied_config_file(paths.state_dir).write_text(text)
    monkeypatch.setattr(systemd, "show", nothing_runs)
    installed = status.collect_installed(paths.config_home, state_dir=paths.state_dir)
    configured = status.collect(config, {}, config_home=paths.config_home, state_dir=paths.state_dir)
    assert rows(installed) == rows(configured)
    [redis] = [u for u in installed.units if u.kind == "redis"]
    assert (redis.name, redis.unit, redis.port, redis.health) == (
        "redis",
        "llmctl-redis.service",
        6391,
        "down",
    )
    names = [u.name for u in installed.units]
    assert names.index("redis") < names.index("gateway")


def test_without_an_nvidia_driver_nvml_is_not_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl import gpu  # noqa: PLC0415

    monkeypatch.setattr(status, "NVIDIA_DRIVER_SIGNS", (str(tmp_path / "nvidiactl"), str(tmp_path / "dxg")))
    monkeypatch.setattr(gpu, "memory_by_pid", lambda: {7: 1024})
    assert status._gpu_memory() is None  # neither llmctl.gpu nor pynvml asked
    (tmp_path / "dxg").touch()  # WSL2's GPU device
    assert status._gpu_memory() == {7: 1024}


class StartedShow:
    """A `systemd.ShowJob` already under way for some units."""

    def __init__(self, units: list[str]) -> None:
        self.units = units
        self.asked = 0

    def covers(self, units: list[str]) -> bool:
        return set(units) <= set(self.units)

    def result(self) -> dict[str, systemd.UnitState]:
        self.asked += 1
        return nothing_runs([*self.units, "llmctl-not-judged.service"])


def test_a_show_under_way_is_used_when_it_covers_the_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, config_path, _ = install_example(tmp_path)
    shows: list[list[str]] = []

    def show(units: list[str]) -> dict[str, systemd.UnitState]:
        shows.append(units)
        return nothing_runs(units)

    monkeypatch.setattr(systemd, "show", show)

    def load() -> tuple[Config, dict[str, str]]:
        raise AssertionError("the config was loaded")

    plain = status.collect_current(paths, config_path, load)
    everything = StartedShow(sorted(p.name for p in paths.unit_dir.glob("llmctl-*.service")))
    covered = status.collect_current(paths, config_path, load, shown=everything)  # type: ignore[arg-type]
    assert (everything.asked, len(shows)) == (1, 1)
    assert rows(covered) == rows(plain)  # the unit it was not asked about is left out
    partial = StartedShow(everything.units[:1])
    status.collect_current(paths, config_path, load, shown=partial)  # type: ignore[arg-type]
    assert (partial.asked, len(shows)) == (0, 2)  # one of its own instead


@pytest.mark.parametrize("mount", ["", "unified", "systemd"])
def test_a_units_processes_are_read_from_its_cgroup_wherever_the_tree_is_mounted(
    mount: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2 at the root, hybrid at unified/, legacy systemd's name=systemd hierarchy at systemd/:
    the cgroup.procs files, not a scan of every process."""
    group = "/user.slice/app.slice/llmctl-llama.service"
    unit_dir = tmp_path / mount / group.lstrip("/")
    (unit_dir / "sub").mkdir(parents=True)
    (unit_dir / "cgroup.procs").write_text("12\n")
    (unit_dir / "sub" / "cgroup.procs").write_text("13\n14\n")
    monkeypatch.setattr(procs, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(procs, "_scan_proc", lambda groups: pytest.fail(f"scanned /proc for {groups}"))
    assert procs.cgroups_pids([group]) == {group: [12, 13, 14]}
