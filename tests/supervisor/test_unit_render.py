"""The llmctl-supervisor.service unit, and its place in the stack."""

from __future__ import annotations

from pathlib import Path

from llmctl.config.load import parse_config
from llmctl.render.units import render_stack
from llmctl.stack import select, stack_units
from tests import systemd_syntax
from tests.conftest import dump, minimal_config
from tests.render.test_units import example_config, fixed_options

UNIT = "systemd/user/llmctl-supervisor.service"


def test_supervisor_unit_is_notify_with_a_watchdog() -> None:
    files = render_stack(example_config(), fixed_options(Path("/c.yaml"))).files
    parsed = systemd_syntax.parse_unit(files[UNIT])

    def get(key: str, section: str = "Service") -> list[str]:
        return [v for s, k, v in parsed if s == section and k == key]

    for key, value in (
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("SyslogIdentifier", "llmctl-supervisor"),
    ):
        assert get(key) == [value], key
    assert get("StartLimitBurst", "Unit") and get("StartLimitIntervalSec", "Unit")
    assert get("PartOf", "Unit") == ["llmctl.target"] and get("WantedBy", "Install") == ["llmctl.target"]
    argv = systemd_syntax.exec_argv(get("ExecStart")[0])
    assert argv[-3:] == ["supervise", "--state-dir", "/home/user/.local/state/llmctl"]
    assert argv[argv.index("--config") + 1] == "/c.yaml"
    target = {k: v for _, k, v in systemd_syntax.parse_unit(files["systemd/user/llmctl.target"])}
    assert "llmctl-supervisor.service" in target["Wants"].split()


def test_disabled_supervisor_renders_no_unit_and_is_not_in_the_stack() -> None:
    config, _ = parse_config(dump(minimal_config(supervisor={"enabled": False})))
    stack = render_stack(config, fixed_options(Path("/c.yaml")))
    assert UNIT not in stack.files and "llmctl-supervisor.service" not in stack.units
    assert all(u.kind != "supervisor" for u in stack_units(config))


def test_supervisor_comes_last_in_the_stack() -> None:
    config, _ = parse_config(dump(minimal_config(supervisor={"metrics": {"port": 9999}})))
    units = stack_units(config)
    assert [u.kind for u in units] == ["llama-server", "gateway", "supervisor"]
    sup = units[-1]
    assert (sup.name, sup.unit, sup.port) == ("supervisor", "llmctl-supervisor.service", 9999)
    assert [u.name for u in select(units, ("supervisor",))] == ["supervisor"]
