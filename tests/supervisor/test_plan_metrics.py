"""The plan (settings per kind, overrides, JSON) and the metrics exposition."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmctl.config.load import parse_config
from llmctl.errors import ConfigError
from llmctl.supervisor.metrics import Metrics
from llmctl.supervisor.plan import Plan, build_plan
from tests.conftest import dump, minimal_config


def config_with_kinds() -> dict[str, object]:
    config = minimal_config()
    config["backends"]["ollama"] = {"kind": "ollama", "command": "/usr/bin/ollama", "port": 11434}
    config["backends"]["vllm"] = {"kind": "vllm", "command": "/v/vllm", "port": 8001, "model": "q"}
    config["models"]["q"] = {"backend": "vllm", "source": "Qwen/Qwen2.5-0.5B"}
    config["models"]["l3"] = {"backend": "ollama", "source": "llama3:8b"}
    return config


def test_defaults_per_kind_then_supervisor_then_backend() -> None:
    config = config_with_kinds()
    config["supervisor"] = {
        "liveness": {"interval": 4},
        "deep": {"idle": 30},
        "backends": {"llama": {"liveness": {"failure_threshold": 5}, "deep": {"enabled": False}}},
        "metrics": {"port": 9999},
    }
    parsed, _ = parse_config(dump(config))
    plan = build_plan(parsed)
    by = {b.name: b for b in plan.backends}
    assert set(by) == {"llama", "ollama", "vllm"}  # not the gateway, not the supervisor
    assert (by["llama"].liveness.interval, by["llama"].liveness.failure_threshold) == (4, 5)
    assert by["llama"].deep.enabled is False and by["llama"].startup.budget == 300
    assert by["ollama"].deep.enabled is False and by["ollama"].deep.idle == 30
    assert by["vllm"].deep.enabled and by["vllm"].liveness.timeout == 10 and by["vllm"].startup.budget == 1200
    assert by["vllm"].model == "q" and by["ollama"].model is None
    assert plan.metrics_port == 9999
    assert Plan.from_json(plan.to_json()) == plan


def test_switch_is_followed(tmp_path: Path) -> None:
    config = minimal_config()
    config["models"]["other"] = {"backend": "llama", "source": "/m/o.gguf"}
    parsed, _ = parse_config(dump(config))
    assert build_plan(parsed, {"llama": "other"}).backends[0].model == "other"


def test_metrics_port_joins_the_duplicate_port_check() -> None:
    config = minimal_config(supervisor={"metrics": {"port": 8080}})
    with pytest.raises(ConfigError) as info:
        parse_config(dump(config))
    assert any("supervisor.metrics.port" in d and "port 8080 is also used" in d for d in info.value.details)
    parse_config(dump(minimal_config(supervisor={"enabled": False, "metrics": {"port": 8080}})))


def _families(metrics: Metrics) -> dict[str, object]:
    text = metrics.exposition().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_has_every_family_and_backend_series(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.declare({"native": "llama-server"})
    metrics.set_phase("native", "running", True)
    metrics.probe_duration.labels("native", "liveness").observe(0.002)
    text = metrics.exposition().decode()
    assert 'llmctl_backend_up{backend="native",kind="llama-server"} 1.0' in text
    assert 'llmctl_backend_restarts_total{backend="native",reason="crash"} 0.0' in text
    assert 'llmctl_backend_phase{backend="native",phase="running"} 1.0' in text
    assert "llmctl_gpus 0.0" in text and "process_resident_memory_bytes" in text


def test_switch_history_becomes_histograms(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    lines = [
        {"time": "2026-11-23T10:00:00+00:00", "backend": "native", "from": None, "to": "a", "ok": True,
         "total_s": 1.5, "phases": {"check": 0.1, "stop": 0.2, "start": 1.0}},
        {"time": "2026-11-23T10:01:00+00:00", "backend": "native", "from": "a", "to": "b", "ok": True,
         "total_s": 7.0, "phases": {"check": 0.1, "start": 6.0}},
        {"time": "2026-11-23T10:02:00+00:00", "backend": "native", "from": "b", "to": "c", "ok": False,
         "total_s": 3.0, "phases": {"check": 3.0}},
    ]  # fmt: skip
    (tmp_path / "switch-history.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nbroken\n")
    text = metrics.exposition().decode()
    assert 'llmctl_switch_duration_seconds_count{backend="native",ok="true"} 2.0' in text
    assert 'llmctl_switch_duration_seconds_bucket{backend="native",le="2.0",ok="true"} 1.0' in text
    assert 'llmctl_switch_duration_seconds_sum{backend="native",ok="true"} 8.5' in text
    assert 'llmctl_switches_total{backend="native",ok="false"} 1.0' in text
    assert 'llmctl_switch_last_duration_seconds{backend="native"} 3.0' in text
    assert 'llmctl_switch_last_phase_seconds{backend="native",phase="check"} 3.0' in text


def test_gpu_memory_per_gpu_and_per_backend(tmp_path: Path) -> None:
    process = SimpleNamespace(pid=10, used_bytes=3 << 30, unit="llmctl-native.service")
    stranger = SimpleNamespace(pid=11, used_bytes=1 << 30, unit=None)
    gpu = SimpleNamespace(
        index=0,
        uuid="GPU-1",
        name="RTX",
        total_bytes=24 << 30,
        used_bytes=4 << 30,
        processes=(process, stranger),
    )
    metrics = Metrics(
        tmp_path,
        gpu_read=lambda: SimpleNamespace(gpus=(gpu,)),
        units=lambda: {"llmctl-native.service": "native", "llmctl-other.service": "other"},
    )
    text = metrics.exposition().decode()
    assert 'llmctl_gpu_memory_used_bytes{gpu="0",name="RTX",uuid="GPU-1"} 4.294967296e+09' in text
    assert 'llmctl_backend_gpu_memory_bytes{backend="native"} 3.221225472e+09' in text
    assert 'llmctl_backend_gpu_memory_bytes{backend="other"} 0.0' in text
    assert "llmctl_gpus 1.0" in text
