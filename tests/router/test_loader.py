"""SwitchLoader: a load uses the config `llmctl up` applied last, not the one the router started with."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from llmctl.config.load import load_config
from llmctl.paths import Paths
from llmctl.router.loader import SwitchLoader
from llmctl.state import record_applied
from tests.conftest import dump, minimal_config


def test_a_load_reads_the_applied_config_again_once_up_changed_it(paths: Paths, tmp_path: Path) -> None:
    user_config = tmp_path / "llmctl.yaml"
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    before = dump(minimal_config(gateway={"command": "/opt/litellm/bin/litellm", "on_demand": True}))
    record_applied(paths.state_dir, before)
    started = replace(load_config(paths.state_dir / "applied-config.yaml"), path=user_config)
    loader = SwitchLoader(started, paths, user_config)
    assert loader.current_config() is started  # unchanged: not parsed again

    after = dump(
        minimal_config(
            gateway={"command": "/opt/litellm/bin/litellm", "on_demand": True, "litellm_metrics": False}
        )
    )
    record_applied(paths.state_dir, after)
    current = loader.current_config()
    assert current.config.gateway.litellm_metrics is False
    assert current.path == user_config  # snapshots of the load name the user's file
    assert loader.current_config() is current


def test_without_an_applied_config_the_loader_keeps_its_own(paths: Paths, tmp_path: Path) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text(dump(minimal_config()))
    loaded = load_config(config)
    assert SwitchLoader(loaded, paths, config).current_config() is loaded
