"""Which model each backend serves: a switch's choice lasts until the config's `model:` changes."""

from __future__ import annotations

import json
from typing import Any

from llmctl.config.load import parse_config
from llmctl.config.schema import Config
from llmctl.paths import Paths
from llmctl.state import record_switch, save_serving, serving_now, state_file
from tests.conftest import dump, minimal_config


def config(model: str = "tiny", **backends: Any) -> Config:
    data = minimal_config()
    data["models"]["big"] = {"backend": "llama", "source": "/models/big.gguf", "context": 512}
    data["models"]["small"] = {"backend": "llama", "source": "/models/small.gguf", "context": 512}
    data["backends"]["llama"]["model"] = model
    for name, extra in backends.items():
        data["backends"][name] = extra
        data["models"][extra["model"]] = {"backend": name, "source": "/models/m.gguf", "context": 512}
    parsed, _warnings = parse_config(dump(data))
    return parsed


def test_a_switch_wins_over_the_config_until_its_model_is_edited(paths: Paths) -> None:
    record_switch(config("tiny"), paths.state_dir, {"llama": "big"})
    assert serving_now(config("tiny"), paths.state_dir) == {"llama": "big"}
    # The user edits `model:`: their edit wins, the switch's choice no longer applies.
    assert serving_now(config("small"), paths.state_dir) == {}
    # Back to what the switch overrode: the choice applies again (it was never lost).
    assert serving_now(config("tiny"), paths.state_dir) == {"llama": "big"}


def test_the_record_keeps_what_each_choice_overrode(paths: Paths) -> None:
    second = {"kind": "llama-server", "command": "/opt/llama/llama-server", "port": 8081, "model": "m2"}
    cfg = config("tiny", other=second)
    record_switch(cfg, paths.state_dir, {"llama": "big"})
    # A later switch of the other backend keeps llama's record and what it overrode.
    record_switch(cfg, paths.state_dir, {"llama": "big", "other": "m2"})
    data = json.loads(state_file(paths.state_dir).read_text())
    assert data["serving"] == {"llama": "big", "other": "m2"}
    assert data["over"] == {"llama": "tiny", "other": "m2"}


def test_a_record_from_before_over_was_kept_still_applies(paths: Paths) -> None:
    save_serving(paths.state_dir, {"llama": "big"})  # no "over": written by an older llmctl
    assert serving_now(config("small"), paths.state_dir) == {"llama": "big"}


def test_records_for_models_or_backends_that_left_the_config_are_ignored(paths: Paths) -> None:
    save_serving(paths.state_dir, {"llama": "gone", "nobody": "big"})
    assert serving_now(config("tiny"), paths.state_dir) == {}
