"""Which backend serves a model, and which GPUs a backend may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.estimate import GiB
from llmctl.planner import (
    choose_backend,
    plan,
)
from tests.planner.fakes import (
    card,
    held,
    inventory,
    make_config,
)


def test_two_cards_a_backend_bound_to_one_gpu_only_looks_at_that_gpu(tmp_path: Path) -> None:
    two = inventory(card(0, 24, 20, "GPU-aaaa"), card(1, 24, 4, "GPU-bbbb"))
    running = [held("ollama", "llama3:8b", 18, gpu=0, idle=True), held("llama", "small", 3, gpu=1)]
    config = make_config(tmp_path, vllm={"gpus": ["GPU-bbbb"], "gpu_memory_utilization": 0.9})
    result = plan(config, "qwen", two, running)
    claim = -(-24 * GiB * 9 // 10)
    by_index = {g.index: g for g in result.gpus}
    assert by_index[1].target and not by_index[0].target
    assert by_index[1].needs == claim and by_index[0].needs == 0
    # Only what is on GPU 1 can make room there: the idle model on GPU 0 is left alone.
    assert [(e.action, e.unit) for e in result.evictions] == [("stop", "llmctl-llama.service")]
    assert result.fits and by_index[1].free_after == 23 * GiB - claim


def test_choose_backend(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert choose_backend(config, "qwen") == "vllm"
    with pytest.raises(LlmctlError, match="unknown model 'smal'; did you mean 'small'"):
        choose_backend(config, "smal")
    with pytest.raises(LlmctlError, match="backend 'ollama' \\(ollama\\) cannot serve big"):
        choose_backend(config, "big", "ollama")
    with pytest.raises(LlmctlError, match="unknown backend 'nope'"):
        choose_backend(config, "big", "nope")
