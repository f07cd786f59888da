"""The supervisor's metrics read by the real thing: Debian's prometheus scrapes them, promtool
lints them, PromQL returns the backends' up values. The Grafana dashboard's queries are checked
against a scrape of all of llmctl's and LiteLLM's endpoints in test_metrics_both_sides.py."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.paths import Paths
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, unavailable


def tool(provisioned: Provisioned, key: str) -> str:
    value = provisioned.env.get(key, "")
    if not value or not Path(value).is_file():
        unavailable(f"{key} missing from provision.env: re-run scripts/provision (installs prometheus)")
    return value


@pytest.fixture(scope="module")
def stack(
    user_manager: UserManager, provisioned: Provisioned, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from llmctl.smoke_model import write_smoke_model  # noqa: PLC0415

    root = tmp_path_factory.mktemp("metrics")
    model = write_smoke_model(root / "smoke.gguf")
    metrics_port = free_port()
    config = root / "llmctl.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    name: {
                        "kind": "llama-server",
                        "command": str(provisioned.llama_server),
                        "port": free_port(),
                        "model": f"smoke-{name}",
                        "gpus": [],
                    }
                    for name in ("alpha", "beta")
                },
                "models": {
                    f"smoke-{n}": {"backend": n, "source": str(model), "context": 256}
                    for n in ("alpha", "beta")
                },
                "gateway": {"enabled": False},
                "supervisor": {"liveness": {"interval": 1}, "metrics": {"port": metrics_port}},
            }
        )
    )
    # What `llmctl switch` writes, before switch has run here.
    state_dir = Paths.from_env().state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    history = state_dir / "switch-history.jsonl"
    history.write_text(
        json.dumps({"time": "2026-11-23T10:00:00+00:00", "backend": "alpha", "from": None, "to": "smoke-alpha",
                    "ok": True, "total_s": 2.5, "phases": {"check": 0.1, "stop": 0.4, "start": 1.8, "verify": 0.2}})
        + "\n"
    )  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    up = run("up")
    assert up.returncode == 0, up.stderr
    yield {"port": metrics_port, "root": root}
    run("down")
    history.unlink(missing_ok=True)
    user_manager.forget_llmctl_units()


def exposition(port: int) -> str:
    deadline = time.monotonic() + 15
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            if 'llmctl_backend_up{backend="alpha",kind="llama-server"} 1.0' in text:
                return text
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the supervisor did not report alpha up"
        time.sleep(0.2)


def test_promtool_finds_no_problem(stack: dict[str, Any], provisioned: Provisioned) -> None:
    text = exposition(stack["port"])
    result = subprocess.run(
        [tool(provisioned, "LLMCTL_TEST_PROMTOOL"), "check", "metrics"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
    assert 'llmctl_switch_duration_seconds_count{backend="alpha",ok="true"} 1.0' in text


def test_prometheus_scrapes_and_promql_returns_up_per_backend(
    stack: dict[str, Any], provisioned: Provisioned
) -> None:
    exposition(stack["port"])
    root: Path = stack["root"]
    web_port = free_port()
    (root / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "llmctl", "static_configs": [{"targets": [f"127.0.0.1:{stack['port']}"]}]}
                ],
            }
        )
    )
    log = (root / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [
            tool(provisioned, "LLMCTL_TEST_PROMETHEUS"),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{web_port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        values: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{api}/query", params={"query": "llmctl_backend_up"}, timeout=5).json()
                values = {r["metric"]["backend"]: r["value"][1] for r in body["data"]["result"]}
                if set(values) == {"alpha", "beta"}:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert prometheus.poll() is None, (root / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        assert values == {"alpha": "1", "beta": "1"}, values
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        body = httpx.get(
            f"{api}/query", params={"query": "llmctl_switch_last_phase_seconds"}, timeout=5
        ).json()
        assert {r["metric"]["phase"] for r in body["data"]["result"]} == {"check", "stop", "start", "verify"}
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(30)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
        log.close()
