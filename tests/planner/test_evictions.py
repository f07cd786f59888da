"""What makes room: the replaced model, then evictions in order, pruned, never a pinned backend."""

from __future__ import annotations

from pathlib import Path

from llmctl.estimate import GiB
from llmctl.planner import (
    SLEEP_RESIDUAL_BYTES,
    plan,
)
from tests.planner.fakes import (
    BACKENDS,
    ON_ONE_CARD,
    ONE_CARD,
    R,
    card,
    gguf,
    held,
    inventory,
    make_config,
)


def test_one_card_replacing_the_old_model_is_enough(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(15))
    assert result.fits and not result.fits_beside_old
    assert result.evictions == ()  # the 5 GiB of "small" come back when llama restarts with "big"
    assert result.gpus[0].freed == 5 * GiB


def test_one_card_unloads_the_idle_ollama_model_first(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(20))
    assert result.fits
    assert [(e.action, e.backend, e.model) for e in result.evictions] == [("unload", "ollama", "llama3:8b")]
    assert result.gpus[0].freed == 11 * GiB and result.gpus[0].free_after == 23 * GiB - int(20.5 * GiB)


def test_one_card_new_ollama_model_unloads_the_other_instead_of_stopping_anything(tmp_path: Path) -> None:
    result = plan(make_config(tmp_path), "mistral", ONE_CARD, ON_ONE_CARD, estimate=gguf(14))
    assert result.backend == "ollama" and result.replaces is None  # Ollama models live side by side
    assert [(e.action, e.model) for e in result.evictions] == [("unload", "llama3:8b")]
    assert result.fits


def test_a_model_that_cannot_fit_says_by_how_much(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = plan(config, "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(30))
    assert not result.fits
    # Everything allowed goes (llama's own 5 GiB is replaced, Ollama's model unloaded): 23 GiB.
    assert result.short_by == int(30.5 * GiB) + R - 23 * GiB
    assert [e.model for e in result.evictions] == ["llama3:8b"]
    assert any("misses by" in n for n in result.notes)


def test_vllm_is_exclusive_everything_unpinned_makes_room(tmp_path: Path) -> None:
    running = [
        held("ollama", "llama3:8b", 4, idle=True),
        held("ollama", "mistral:latest", 3, idle=False),
        held("llama", "small", 5, idle=False),
    ]
    card0 = inventory(card(0, 24, 12.5))  # 0.5 GiB of driver and desktop
    result = plan(make_config(tmp_path), "qwen", card0, running)
    claim = -(-24 * GiB * 9 // 10)
    assert result.estimate.method == "vllm" and result.needs_bytes == claim
    assert [(e.action, e.backend, e.model) for e in result.evictions] == [
        ("unload", "ollama", "llama3:8b"),  # idle first
        ("unload", "ollama", "mistral:latest"),  # then the cheapest to reload: smallest
        ("stop", "llama", "small"),
    ]
    assert result.fits and result.gpus[0].free_after == int(23.5 * GiB) - claim


def test_vllm_never_evicts_what_the_config_pins(tmp_path: Path) -> None:
    running = [held("ollama", "llama3:8b", 4, idle=True), held("llama", "small", 5, idle=True)]
    config = make_config(tmp_path, llama={"pinned": True})
    result = plan(config, "qwen", inventory(card(0, 24, 9.5)), running)
    claim = -(-24 * GiB * 9 // 10)
    assert not result.fits
    assert all(e.backend != "llama" for e in result.evictions)
    assert result.short_by == claim - int(18.5 * GiB)  # vLLM's own rule: free >= claim, no reserve
    assert any("llama is pinned" in n for n in result.notes)


def test_sleeping_vllm_frees_all_but_its_residual(tmp_path: Path) -> None:
    config = make_config(tmp_path, vllm={"sleep_mode": True})
    running = [held("vllm", "qwen", 20, idle=True)]
    card0 = inventory(card(0, 24, 20.5))
    asleep = plan(config, "big", card0, running, estimate=gguf(15))
    assert [(e.action, e.frees_bytes) for e in asleep.evictions] == [
        ("sleep", 20 * GiB - SLEEP_RESIDUAL_BYTES)
    ]
    # When the residual is in the way, stopping it is the only way.
    stopped = plan(config, "big", card0, running, estimate=gguf(21.5))
    assert [(e.action, e.frees_bytes) for e in stopped.evictions] == [("stop", 20 * GiB)]
    assert stopped.fits


def test_evictions_are_pruned_to_what_is_needed(tmp_path: Path) -> None:
    backends = {
        **BACKENDS,
        **{f"b{i}": {"kind": "llama-server", "command": "/bin/true", "port": 9000 + i} for i in range(4)},
    }
    config = make_config(tmp_path, backends)
    running = [
        held("b0", None, 10, idle=True),
        held("b1", None, 2, idle=True),
        held("b2", None, 1, idle=False),
        held("b3", None, 8, idle=False),
    ]
    result = plan(config, "big", inventory(card(0, 24, 21)), running, estimate=gguf(11.5))
    # Greedy takes b1 (idle, 2) then b0 (idle, 10); b1 alone was not needed once b0 goes.
    assert [e.backend for e in result.evictions] == ["b0"]
    assert result.fits
