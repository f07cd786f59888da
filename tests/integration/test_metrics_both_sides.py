"""LiteLLM's own metrics beside llmctl's, read by the real Prometheus.

One on-demand stack (a real llama-server behind llmctl's router, the real LiteLLM 1.106.2 in
front, the supervisor) with gateway.litellm_metrics on (as `llmctl init` writes it where LiteLLM's venv has
prometheus-client, as provision's has). Prometheus scrapes the
three endpoints (the gateway's /metrics/ with the gateway key as a bearer file, 0600) while
requests go through the gateway: two that succeed (and make the router load and evict), one
whose model cannot load and falls back, one whose model cannot load and has no fallback. The
scraped series must carry those requests per model, and every metric the Grafana dashboard
names (tests/dashboard.py) must be in the scrape of its endpoint.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.paths import Paths
from llmctl.smoke_model import SmokeShape, write_smoke_model
from tests.dashboard import LITELLM_METRICS, ROUTER_METRICS, SUPERVISOR_METRICS, load, metric_names, queries
from tests.integration.broken_models import write_missing_tensor_gguf
from tests.integration.conftest import LLMCTL, Provisioned, UserManager, free_port, stack_up, unavailable


def tool(provisioned: Provisioned, key: str) -> str:
    value = provisioned.env.get(key, "")
    if not value or not Path(value).is_file():
        unavailable(f"{key} missing from provision.env: re-run scripts/provision (installs prometheus)")
    return value


def exported(text: str) -> set[str]:
    """Names an exposition holds: every family (# TYPE) and every sample name."""
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE))
    return names


class Stack:
    def __init__(self, root: Path, provisioned: Provisioned) -> None:
        self.root = root
        alpha = write_smoke_model(root / "alpha.gguf", seed=1)
        beta = write_smoke_model(root / "beta.gguf", SmokeShape(layers=3), seed=2)
        broken = write_missing_tensor_gguf(alpha, root / "broken.gguf")
        self.gateway_port = free_port()
        self.router_port = free_port()
        self.supervisor_port = free_port()
        native = {"backend": "native", "context": 256}
        self.config = root / "llmctl.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "backends": {
                        "native": {
                            "kind": "llama-server",
                            "command": str(provisioned.llama_server),
                            "port": free_port(),
                            "model": "alpha",
                            "gpus": [],
                        }
                    },
                    "models": {
                        "alpha": {**native, "source": str(alpha)},
                        "beta": {**native, "source": str(beta)},
                        "broken": {**native, "source": str(broken)},
                        "broken-alone": {**native, "source": str(broken)},
                    },
                    "gateway": {
                        "litellm_metrics": True,
                        "command": str(provisioned.litellm),
                        "port": self.gateway_port,
                        "on_demand": True,
                        "router_port": self.router_port,
                        "fallbacks": {"broken": ["alpha"]},
                    },
                    "supervisor": {"liveness": {"interval": 1}, "metrics": {"port": self.supervisor_port}},
                }
            )
        )

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLMCTL, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def key_file(self) -> Path:
        """The gateway key alone in a 0600 file: what Prometheus's credentials_file reads."""
        key = self.run("gateway", "key").stdout.strip()
        assert key
        path = self.root / "gateway.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return path

    def chat(self, model: str, key: str) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=180,
        )

    def endpoints(self, key: str) -> dict[str, str]:
        """job -> the exposition text its endpoint returns now."""
        supervisor = httpx.get(f"http://127.0.0.1:{self.supervisor_port}/metrics", timeout=10)
        router = httpx.get(f"http://127.0.0.1:{self.router_port}/_llmctl/metrics", timeout=10)
        gateway = httpx.get(
            f"http://127.0.0.1:{self.gateway_port}/metrics/",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        for response in (supervisor, router, gateway):
            assert response.status_code == 200, (response.url, response.status_code, response.text[:500])
        return {
            "llmctl-supervisor": supervisor.text,
            "llmctl-router": router.text,
            "llmctl-gateway": gateway.text,
        }


class Prometheus:
    def __init__(self, binary: str, root: Path, stack: Stack, key_file: Path) -> None:
        self.root = root
        web_port = free_port()
        self.api = f"http://127.0.0.1:{web_port}/api/v1"
        # The scrape config docs/metrics.md shows, with this run's ports.
        scrape = [
            {"job_name": "llmctl-supervisor", "static_configs": [{"targets": [f"127.0.0.1:{stack.supervisor_port}"]}]},
            {
                "job_name": "llmctl-router",
                "metrics_path": "/_llmctl/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{stack.router_port}"]}],
            },
            {
                "job_name": "llmctl-gateway",
                "metrics_path": "/metrics/",
                "authorization": {"credentials_file": str(key_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{stack.gateway_port}"]}],
            },
        ]  # fmt: skip
        (root / "prometheus.yml").write_text(
            yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape})
        )
        self.log = (root / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.api}/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait(self, what: str, check: Any, timeout: float = 90) -> Any:
        """check() until it returns something true; its last answer is in the failure."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "prometheus.log").read_text()[-3000:]
            try:
                last = check()
                if last:
                    return last
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"{what}: {last!r}")

    def by(self, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(r["metric"].get(n, "") for n in labels): float(r["value"][1]) for r in self.query(promql)
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, provisioned: Provisioned, user_manager: UserManager
) -> Iterator[dict[str, Any]]:
    """The stack up, Prometheus scraping it, and the four requests sent through the gateway."""
    binary = tool(provisioned, "LLMCTL_TEST_PROMETHEUS")
    root = tmp_path_factory.mktemp("metrics-both-sides")
    stack = Stack(root, provisioned)
    with stack_up(stack.run, user_manager):
        key_file = stack.key_file()
        key = key_file.read_text().strip()
        prometheus = Prometheus(binary, root, stack, key_file)
        try:
            prometheus.wait(
                "all three targets up",
                lambda: (
                    [
                        t["health"]
                        for t in httpx.get(f"{prometheus.api}/targets", timeout=5).json()["data"][
                            "activeTargets"
                        ]
                    ]
                    == ["up"] * 3
                ),
            )
            answers = {model: stack.chat(model, key) for model in ("alpha", "beta", "broken", "broken-alone")}
            yield {"stack": stack, "prometheus": prometheus, "key": key, "answers": answers}
        finally:
            prometheus.stop()


def test_the_requests_got_what_the_metrics_will_show(scraped: dict[str, Any]) -> None:
    answers: dict[str, httpx.Response] = scraped["answers"]
    for model in ("alpha", "beta"):
        assert answers[model].status_code == 200, answers[model].text
        assert answers[model].json()["model"] == model
    assert answers["broken"].status_code == 200, answers["broken"].text
    assert answers["broken"].json()["model"] == "alpha"  # its fallback answered
    assert answers["broken-alone"].status_code == 503, answers["broken-alone"].text


def test_litellm_metrics_are_open_source_and_behind_the_gateway_key(scraped: dict[str, Any]) -> None:
    stack: Stack = scraped["stack"]
    url = f"http://127.0.0.1:{stack.gateway_port}/metrics/"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not-the-key"}, timeout=10).status_code == 401
    with_key = {"Authorization": f"Bearer {scraped['key']}"}
    bare = httpx.get(url.removesuffix("/"), headers=with_key, timeout=10)
    assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/metrics/"), bare
    text = stack.endpoints(scraped["key"])["llmctl-gateway"]
    # Before LiteLLM opened them up, a non-premium proxy exported only this one counter.
    assert "litellm_not_a_premium_user_metric" not in text
    assert "litellm_proxy_total_requests_metric_total{" in text


def test_litellm_series_carry_the_requests_per_model(scraped: dict[str, Any]) -> None:
    prometheus: Prometheus = scraped["prometheus"]
    gateway = 'job="llmctl-gateway"'

    def totals() -> dict[tuple[str, ...], float]:
        got = prometheus.by(
            f"sum by (requested_model, status_code) (litellm_proxy_total_requests_metric_total{{{gateway}}})",
            "requested_model",
            "status_code",
        )
        return got if ("broken-alone", "503") in got and ("beta", "200") in got else {}

    requests = prometheus.wait("the gateway's requests per model", totals)
    # A request answered by a fallback is counted under the model that answered it (LiteLLM
    # labels successes with the serving model group): alpha's own and broken's.
    assert requests[("alpha", "200")] == 2, requests
    assert requests[("beta", "200")] == 1, requests
    assert requests[("broken-alone", "503")] == 1, requests

    failed = prometheus.by(
        f"sum by (requested_model, exception_status) (litellm_proxy_failed_requests_metric_total{{{gateway}}})",
        "requested_model",
        "exception_status",
    )
    # Refused keys count too, under no model (the 401s of the test above, on /metrics/).
    assert {k: v for k, v in failed.items() if k[0]} == {("broken-alone", "503"): 1}, failed

    fallbacks = prometheus.by(
        f"sum by (requested_model, fallback_model) (litellm_deployment_successful_fallbacks_total{{{gateway}}})",
        "requested_model",
        "fallback_model",
    )
    assert fallbacks == {("broken", "alpha"): 1}, fallbacks

    latency = prometheus.by(
        f"sum by (requested_model) (litellm_request_total_latency_metric_count{{{gateway}}})",
        "requested_model",
    )
    assert latency.get(("alpha",), 0) >= 1 and latency.get(("beta",), 0) >= 1, latency
    tokens = prometheus.by(
        f"sum by (requested_model) (litellm_total_tokens_metric_total{{{gateway}}})", "requested_model"
    )
    assert tokens.get(("alpha",), 0) > 0 and tokens.get(("beta",), 0) > 0, tokens


def test_router_series_carry_the_loads_evictions_and_failures(scraped: dict[str, Any]) -> None:
    prometheus: Prometheus = scraped["prometheus"]
    router = 'job="llmctl-router"'

    def loads() -> dict[tuple[str, ...], float]:
        got = prometheus.by(f"llmctl_router_loads_total{{{router}}}", "model", "reason")
        return got if ("beta", "demand") in got and ("alpha", "demand") in got else {}

    prometheus.wait("the router's loads", loads)
    evictions = prometheus.by(f"llmctl_router_evictions_total{{{router}}}", "reason")
    assert evictions.get(("demand",), 0) >= 1, evictions
    failures = prometheus.by(f"llmctl_router_load_failures_total{{{router}}}", "model")
    assert failures.get(("broken",), 0) >= 1 and failures.get(("broken-alone",), 0) >= 1, failures
    unavailable_ = prometheus.by(f"llmctl_router_unavailable_total{{{router}}}", "model")
    assert unavailable_.get(("broken-alone",), 0) >= 1, unavailable_


def test_every_dashboard_metric_is_in_the_scrape_of_its_endpoint(scraped: dict[str, Any]) -> None:
    stack: Stack = scraped["stack"]
    texts = stack.endpoints(scraped["key"])
    for job, names in (
        ("llmctl-supervisor", SUPERVISOR_METRICS),
        ("llmctl-router", ROUTER_METRICS),
        ("llmctl-gateway", LITELLM_METRICS),
    ):
        missing = names - exported(texts[job])
        assert not missing, f"{job} does not export {sorted(missing)}"
    # And what the gateway panels show was in what Prometheus stored, not only in the text.
    prometheus: Prometheus = scraped["prometheus"]
    stored = set(httpx.get(f"{prometheus.api}/label/__name__/values", timeout=10).json()["data"])
    driven = LITELLM_METRICS - {"litellm_deployment_failed_fallbacks_total"}  # no fallback failed here
    assert driven <= stored, sorted(driven - stored)


def test_every_dashboard_query_runs_and_the_gateway_and_router_panels_show_data(
    scraped: dict[str, Any],
) -> None:
    prometheus: Prometheus = scraped["prometheus"]
    time.sleep(3)  # a few scrapes after the requests, for increase() and rate()
    empty = []
    for title, expr in queries(load()):
        result = prometheus.query(expr.replace("$job", ".*"))
        names = metric_names(expr)
        quiet = {"litellm_deployment_failed_fallbacks_total"}
        if names & (LITELLM_METRICS | ROUTER_METRICS) and not names & quiet and not result:
            empty.append((title, expr))
    assert not empty, empty


def test_litellm_metrics_off_takes_the_endpoint_away(scraped: dict[str, Any]) -> None:
    """Last in the module: it changes the stack. `llmctl up` with the key off reloads the gateway."""
    stack: Stack = scraped["stack"]
    config = yaml.safe_load(stack.config.read_text())
    config["gateway"]["litellm_metrics"] = False
    stack.config.write_text(yaml.safe_dump(config))
    up = stack.run("up")
    assert up.returncode == 0, up.stderr
    gateway_yaml = yaml.safe_load(Paths.from_env().gateway_file.read_text())
    assert "callbacks" not in gateway_yaml["litellm_settings"]
    response = httpx.get(
        f"http://127.0.0.1:{stack.gateway_port}/metrics/",
        headers={"Authorization": f"Bearer {scraped['key']}"},
        timeout=10,
    )
    assert response.status_code == 404, (response.status_code, response.text[:300])
    # A load after `up` changed only gateway settings: the router renders gateway.yaml from the
    # config up applied (from its start-up one it would reload the gateway back, under this
    # very request, which the drain would then cut with a 500).
    answer = stack.chat("beta", scraped["key"])
    assert answer.status_code == 200, answer.text
    gateway_after = yaml.safe_load(Paths.from_env().gateway_file.read_text())
    assert "callbacks" not in gateway_after["litellm_settings"]
