"""How a model is fitted over two cards: llama.cpp spreads, Ollama prefers one GPU."""

from __future__ import annotations

from pathlib import Path

from llmctl.estimate import GiB
from llmctl.planner import (
    plan,
)
from tests.planner.fakes import (
    R,
    card,
    gguf,
    inventory,
    make_config,
)


def test_two_cards_llama_cpp_spreads_over_both(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 16), card(1, 24, 4))
    result = plan(make_config(tmp_path), "big", two, [], estimate=gguf(20, per_gpu_gib=1))
    assert result.fits and result.fits_beside_old
    needs = {g.index: g.needs for g in result.gpus}
    assert sum(needs.values()) == 22 * GiB  # 20 spread + 1 per GPU
    # Split in proportion to what is free: GPU 1 takes the larger share.
    assert needs[1] > needs[0] > GiB
    assert all(g.free_after >= R for g in result.gpus)


def test_two_cards_ollama_prefers_one_gpu(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 16), card(1, 24, 4))
    result = plan(make_config(tmp_path), "mistral", two, [], estimate=gguf(10))
    assert {g.index: g.needs for g in result.gpus} == {0: 0, 1: int(10.5 * GiB)}
