"""The plan as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.estimate import GiB
from llmctl.planner import (
    Plan,
    plan,
)
from tests.planner.fakes import (
    ON_ONE_CARD,
    ONE_CARD,
    gguf,
    make_config,
)


def test_plan_as_dict_is_json_ready(tmp_path: Path) -> None:
    result: Plan = plan(make_config(tmp_path), "big", ONE_CARD, ON_ONE_CARD, estimate=gguf(20))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["fits"] is True and data["short_by_bytes"] == 0
    assert data["evictions"][0] == {
        "action": "unload",
        "backend": "ollama",
        "unit": "llmctl-ollama.service",
        "model": "llama3:8b",
        "frees_bytes": 6 * GiB,
        "frees_by_gpu": {"0": 6 * GiB},
        "idle": True,
    }
    assert data["replaces"] == {"backend": "llama", "model": "small", "frees_bytes": 5 * GiB}
    assert data["estimate"]["gpu_bytes"] == int(20.5 * GiB)
