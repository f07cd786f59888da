"""A switch's intent record names every unit it will touch before it touches any (issue 13),
and recovery undoes a record that names no snapshot (an Ollama load, a vLLM wake-up).

systemd is faked here (the kill itself is in tests/integration/test_switch_vllm.py): what
matters is what the record says at the moment of the first eviction, and what recovery does
with a record in what order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmctl import recovery, systemd, transaction
from llmctl.config.load import load_config
from llmctl.errors import LlmctlError
from llmctl.gpu import Inventory
from llmctl.paths import Paths
from llmctl.planner import Action, Eviction, Plan, live, plan
from llmctl.render.units import RenderOptions, render_stack
from llmctl.stack import StackUnit
from llmctl.switch import in_place, room
from llmctl.switch.steps import Phases, SwitchResult
from tests.conftest import write_config
from tests.planner.fakes import card, gguf, inventory

BACKENDS = {
    "llama": {"kind": "llama-server", "command": "/bin/true", "port": 18180, "model": "small", "gpus": [0]},
    "side": {"kind": "llama-server", "command": "/bin/true", "port": 18181, "model": "small2", "gpus": [0]},
    "gone": {"kind": "llama-server", "command": "/bin/true", "port": 18182, "model": "small3", "gpus": [0]},
    "olla": {"kind": "ollama", "command": "/bin/true", "port": 18183, "gpus": [0]},
    "big": {"kind": "vllm", "command": "/bin/true", "port": 18184, "model": "qwen", "sleep_mode": True,
            "gpus": [0]},
}  # fmt: skip
MODELS = {
    "small": {"backend": "llama", "source": "/models/small.gguf", "context": 512},
    "small2": {"backend": "side", "source": "/models/small.gguf", "context": 512},
    "small3": {"backend": "gone", "source": "/models/small.gguf", "context": 512},
    "llama3": {"backend": "olla", "source": "llama3:8b"},
    "qwen": {"backend": "big", "source": "Qwen/Qwen2.5-0.5B-Instruct"},
}


def evicting(tmp_path: Path, target: str, model: str, *evictions: tuple[Action, str]) -> Plan:
    """A plan for `model` on `target` that evicts (action, backend) in this order."""
    config = load_config(write_config(tmp_path / "llmctl.yaml", config_data())).config
    base = plan(config, model, inventory(card(0, 24, 1)), [], backend=target, estimate=gguf(1))
    chosen = tuple(Eviction(a, b, f"llmctl-{b}.service", None, {0: 1 << 30}, None) for a, b in evictions)
    return replace(base, evictions=chosen)


class OneCard:
    """A GPU source: one 24 GiB card with 1 GiB used, by nothing this test evicts."""

    def inventory(self) -> Inventory:
        return inventory(card(0, 24, 1))


def config_data() -> dict[str, object]:
    return {"version": 1, "backends": BACKENDS, "models": MODELS, "gateway": {"enabled": False}}


def state(unit: str, active: str) -> systemd.UnitState:
    return systemd.UnitState(unit, "loaded", active, "running", 4242, 0, "success", "", 0, "enabled")


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """A fake manager in which everything but `gone` runs; it records what is stopped and
    started, and the intent record as it was at each stop."""
    seen: dict[str, list[object]] = {"stopped": [], "started": [], "record_at_stop": []}
    paths = Paths.from_env()

    def show(units: list[str]) -> dict[str, systemd.UnitState]:
        return {u: state(u, "inactive" if u == "llmctl-gone.service" else "active") for u in units}

    def stop(units: list[str], **_: object) -> None:
        if units:
            seen["stopped"].extend(units)
            seen["record_at_stop"].append(transaction.pending(paths.state_dir))

    monkeypatch.setattr(systemd, "show", show)
    monkeypatch.setattr(systemd, "stop", stop)
    monkeypatch.setattr(systemd, "start", lambda units, **_: seen["started"].extend(units))
    return seen


def test_what_the_evictions_touch_is_what_runs_of_their_stops_and_sleeps(
    tmp_path: Path, manager: dict[str, list[object]]
) -> None:
    planned = evicting(
        tmp_path, "llama", "small",
        ("sleep", "big"), ("stop", "side"), ("stop", "gone"), ("unload", "olla"), ("stop", "llama"),
    )  # fmt: skip
    # Not `gone` (it does not run: recovery must not start it), not the switched backend itself
    # (the switch names its own unit), not an Ollama unload (Ollama loads a model on demand).
    assert room.to_touch(planned, "llama") == (("llmctl-side.service",), ("llmctl-big.service",))
    assert room.to_touch(None, "llama") == ((), ())


def test_an_ollama_switch_records_its_evictions_before_the_first_and_clears_them_after(
    tmp_path: Path, paths: Paths, manager: dict[str, list[object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config(write_config(tmp_path / "llmctl.yaml", config_data()))
    planned = evicting(tmp_path, "olla", "llama3", ("stop", "side"))

    def load_fails(*_: object) -> None:
        raise LlmctlError("Ollama could not load llama3:8b")

    monkeypatch.setattr(in_place, "load_into_ollama", load_fails)
    # The switch plans through planner.live (with a GPU source); here that plan is given.
    monkeypatch.setattr(live, "plan_for", lambda *_, **__: planned)
    with pytest.raises(LlmctlError, match="could not load") as caught:
        in_place.switch_ollama(loaded, paths, "olla", "llama3", None, True, None, None, OneCard())
    (record,) = manager["record_at_stop"]
    assert isinstance(record, transaction.Intent)
    assert (record.command, record.snapshot, record.units, record.wake) == (
        "switch",
        "",
        ("llmctl-side.service",),
        (),
    )
    assert manager["started"] == ["llmctl-side.service"]  # the failure undid the eviction itself
    assert "llmctl-side.service started again" in caught.value.details
    assert transaction.pending(paths.state_dir) is None


def test_a_vllm_wake_up_that_evicts_records_that_it_must_sleep_again(
    tmp_path: Path, paths: Paths, manager: dict[str, list[object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config(write_config(tmp_path / "llmctl.yaml", config_data()))
    planned = evicting(tmp_path, "big", "qwen", ("stop", "side"))
    result = SwitchResult(backend="big", old="qwen", new="qwen")

    def wake_fails(*_: object) -> None:
        raise LlmctlError("vLLM did not wake up")

    monkeypatch.setattr("llmctl.backends.vllm.wake_up", wake_fails)
    with pytest.raises(LlmctlError, match="did not wake up"):
        in_place.wake_vllm(loaded, paths, "big", result, Phases(result, None), planned, None, None)
    (record,) = manager["record_at_stop"]
    assert isinstance(record, transaction.Intent)
    assert (record.units, record.sleep) == (("llmctl-side.service",), ("llmctl-big.service",))
    assert transaction.pending(paths.state_dir) is None


def test_recovery_of_a_record_without_snapshot_sleeps_starts_then_wakes(
    tmp_path: Path, paths: Paths, manager: dict[str, list[object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config(write_config(tmp_path / "llmctl.yaml", config_data()))
    for rel, text in render_stack(loaded.config, RenderOptions(loaded.path, paths)).files.items():
        (paths.config_home / rel).parent.mkdir(parents=True, exist_ok=True)
        (paths.config_home / rel).write_text(text)
    order: list[str] = []

    def converge(units: list[StackUnit], changed: set[str], **_: object) -> list[object]:
        order.append("start " + " ".join(u.unit for u in units))
        return []

    def asked(verb: str, fail: bool = False) -> object:
        def call(units: list[str], _: Paths) -> tuple[list[str], list[str]]:
            order.append(f"{verb} " + " ".join(units))
            lines = [f"{u} {verb}" for u in units]
            return lines, lines if fail else []

        return call

    monkeypatch.setattr(recovery, "converge", converge)
    monkeypatch.setattr(room, "put_to_sleep", asked("sleep"))
    monkeypatch.setattr(room, "wake_up", asked("wake"))
    transaction.begin(
        paths.state_dir, "switch", "", ("llmctl-side.service",), wake=("llmctl-big.service",),
        sleep=("llmctl-olla.service",),
    )  # fmt: skip
    messages: list[str] = []
    result = recovery.recover_pending(paths, on_message=messages.append)
    assert result is not None and result.snapshot is None
    # First what it woke sleeps (that frees memory), then what it stopped starts, then the wake.
    assert order == ["sleep llmctl-olla.service", "start llmctl-side.service", "wake llmctl-big.service"]
    assert messages[0].endswith("stopped at phase begin; undoing what it did")
    assert result.notes == ("llmctl-olla.service sleep", "llmctl-big.service wake")
    assert transaction.pending(paths.state_dir) is None

    # A vLLM that does not wake: said, and the record is gone all the same (`llmctl restart`
    # would otherwise be refused by the recovery it runs first).
    monkeypatch.setattr(room, "wake_up", asked("wake", fail=True))
    transaction.begin(paths.state_dir, "switch", "", wake=("llmctl-big.service",))
    with pytest.raises(LlmctlError, match="not every vLLM it put to sleep woke up") as caught:
        recovery.recover_pending(paths)
    assert caught.value.details == ["llmctl-big.service wake"]
    assert transaction.pending(paths.state_dir) is None
