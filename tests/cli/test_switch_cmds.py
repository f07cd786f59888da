"""`llmctl switch --dry-run`: the plan, and whether the switch will start the model beside the old."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl import systemd
from llmctl.cli import main
from llmctl.smoke_model import write_smoke_model
from tests.conftest import write_config

GiB = 1024**3


def described(tmp_path: Path, free: int) -> Path:
    total = 24 * GiB
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps({"source": "file", "gpus": [{
        "index": 0, "uuid": "GPU-0", "name": "Described", "total_bytes": total, "used_bytes": total - free,
        "free_bytes": free, "utilization_percent": 0, "processes": [],
    }]}))  # fmt: skip
    return path


def config(tmp_path: Path, gateway: bool) -> Path:
    models = {
        name: {
            "backend": "llama",
            "source": str(write_smoke_model(tmp_path / f"{name}.gguf")),
            "context": 256,
        }
        for name in ("small", "other")
    }
    data = {
        "version": 1,
        "backends": {"llama": {"kind": "llama-server", "command": "/bin/true", "port": 18080, "model": "small",
                               "gpus": [0]}},
        "models": models,
        "gateway": {"enabled": gateway, "command": "/bin/true"},
    }  # fmt: skip
    return write_config(tmp_path / "llmctl.yaml", data)


@pytest.mark.parametrize(
    ("free", "gateway", "beside"),
    [(20 * GiB, True, True), (int(1.2 * GiB), True, False), (20 * GiB, False, False)],
    ids=["room-for-two", "room-for-one", "no-gateway"],
)
def test_dry_run_says_whether_the_new_model_starts_beside_the_old(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    free: int, gateway: bool, beside: bool,
) -> None:  # fmt: skip
    monkeypatch.setattr(systemd, "manager_reachable", lambda: False)
    base = ["--config", str(config(tmp_path, gateway)), "switch", "other", "--dry-run"]
    inventory = ["--gpu-inventory", str(described(tmp_path, free))]
    assert main([*base, "--json", *inventory]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["dry_run"] is True and data["plan"]["fits"] is True
    assert data["beside"] is beside
    assert main([*base, *inventory]) == 0
    text = capsys.readouterr().out
    expected = "switch: starts other beside the old model" if beside else "switch: stops what llama serves"
    assert expected in text
