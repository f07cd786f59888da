"""When a switch may start the new model beside the old one, and the bridge unit it renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config.load import LoadedConfig, load_config
from llmctl.estimate import Estimate, GiB
from llmctl.paths import Paths
from llmctl.planner import plan
from llmctl.render.units import RenderOptions, render_bridge
from llmctl.switch import beside
from llmctl.switch.beside import available_ram, bridge_fits
from tests.conftest import write_config
from tests.planner.fakes import card, held, inventory
from tests.systemd_syntax import exec_argv, parse_unit

MODELS = {
    "small": {"backend": "llama", "source": "/models/small.gguf", "context": 4096},
    "other": {"backend": "llama", "source": "/models/other.gguf", "context": 4096},
}


def loaded(
    tmp_path: Path, *, gateway: bool = True, gpus: list[int] | None = None, **extra: object
) -> LoadedConfig:
    llama = {"kind": "llama-server", "command": "/bin/true", "port": 8080, "model": "small", **extra}
    if gpus is not None:
        llama["gpus"] = gpus
    data = {"version": 1, "backends": {"llama": llama}, "models": MODELS, "gateway": {"enabled": gateway}}
    return load_config(write_config(tmp_path / "llmctl.yaml", data))


def one_gib_model() -> Estimate:
    return Estimate(method="gguf", weights_gpu=GiB // 2, overhead_gpu=GiB // 2, weights_cpu=GiB)


@pytest.mark.parametrize(("used_gib", "expected"), [(10, True), (22.5, False)])
def test_on_a_gpu_two_copies_must_fit_beside_what_runs(
    tmp_path: Path, used_gib: float, expected: bool
) -> None:
    """24 GiB card: with 14 GiB free two 1 GiB copies fit; with 1.5 GiB free one does, two do not."""
    config = loaded(tmp_path, gpus=[0])
    gpus = inventory(card(0, 24, used_gib))
    planned = plan(config.config, "other", gpus, [held("llama", "small", 1)], estimate=one_gib_model())
    assert planned.fits
    assert bridge_fits(config, planned, "llama") is expected


def test_no_gateway_no_bridge(tmp_path: Path) -> None:
    config = loaded(tmp_path, gateway=False, gpus=[0])
    planned = plan(config.config, "other", inventory(card(0, 24, 1)), [], estimate=one_gib_model())
    assert not bridge_fits(config, planned, "llama")
    assert not bridge_fits(loaded(tmp_path, gpus=[0]), None, "llama")  # nothing planned


def test_a_switch_that_needs_evictions_does_not_bridge(tmp_path: Path) -> None:
    config = loaded(tmp_path, gpus=[0])
    full = inventory(card(0, 24, 23.5))
    planned = plan(config.config, "other", full, [held("llama", "small", 1)], estimate=one_gib_model())
    assert not planned.fits_beside_old
    assert not bridge_fits(config, planned, "llama")


def test_on_cpu_the_ram_must_hold_two_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = loaded(tmp_path, gpus=[])
    planned = plan(config.config, "other", inventory(), [], estimate=one_gib_model())
    assert planned.device == "cpu"
    monkeypatch.setattr(beside, "available_ram", lambda: 3 * GiB)  # two 1 GiB copies + 1 GiB spare
    assert bridge_fits(config, planned, "llama")
    monkeypatch.setattr(beside, "available_ram", lambda: 3 * GiB - 1)
    assert not bridge_fits(config, planned, "llama")
    monkeypatch.setattr(beside, "available_ram", lambda: None)
    assert not bridge_fits(config, planned, "llama")


def test_available_ram_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_ram(meminfo) == 8_000_000 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert available_ram(meminfo) is None
    assert available_ram(tmp_path / "missing") is None


def test_the_bridge_unit_is_the_backend_on_a_loopback_port_with_its_gate(tmp_path: Path) -> None:
    config = loaded(tmp_path, gpus=[], host="0.0.0.0", allow_non_loopback=True)
    options = RenderOptions(
        config_path=tmp_path / "llmctl.yaml", paths=Paths.from_env(), resolve=lambda c: Path("/bin/true"),
        serving=(("llama", "other"),),
    )  # fmt: skip
    unit, text = render_bridge(config.config, "llama", 43210, options)
    assert unit == "llmctl-llama-bridge.service"
    entries = {(section, key): value for section, key, value in parse_unit(text)}
    argv = exec_argv(entries[("Service", "ExecStart")])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # whatever the backend binds
    assert argv[argv.index("--port") + 1] == "43210"
    assert argv[argv.index("--alias") + 1] == "other"
    gate = exec_argv(entries[("Service", "ExecStartPost")])
    assert gate[gate.index("--url") + 1] == "http://127.0.0.1:43210"
    assert gate[gate.index("--model") + 1] == "other"
    assert entries[("Service", "SyslogIdentifier")] == "llmctl-llama-bridge"
