"""LiteLLM's own check of a rendered gateway.yaml, for `llmctl validate` with gateway.litellm set.

llmctl checks the passthrough's keys and types itself (`llmctl.config.litellm_settings`); some
values only LiteLLM can judge: whether a callback's name is one it knows (or a module it can
import), a retry policy its pydantic model takes, what its Router accepts. LiteLLM 1.106 has a
check for that, `litellm --config FILE --validate_config`: it runs the proxy's own config load
(`ProxyConfig.load_config`: litellm_settings applied, callbacks initialised, general_settings
validated, `Router(**router_settings)` built) and exits 1 with the error, without serving.

It runs here in LiteLLM's venv, by the interpreter the gateway's unit uses
(`llmctl.gateway_runtime.interpreter`), with `-I` and llmctl's hooks directory on the path as
the gateway's child has them, in an empty directory, with a throwaway master key and no
database or Redis in its environment: it reads the file, never llmctl's secrets. Importing
LiteLLM takes seconds, so this runs only when a passthrough is set, and never on the CLI's
start-up path.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmctl.errors import LlmctlError
from llmctl.gateway_runtime import LITELLM_HOOKS_DIR
from llmctl.gateway_runtime.interpreter import litellm_python

Outcome = Literal["accepted", "refused", "not-installed"]

# What LiteLLM's own CLI does with --validate_config, called from the venv's python under -I
# (which ignores PYTHONPATH), with the hooks directory that gateway.yaml's custom_auth is in.
_VALIDATE = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from litellm.proxy.proxy_cli import run_server; "
    "run_server(['--config', sys.argv[1], '--validate_config'], prog_name='litellm')"
)
FAILED_PREFIX = "LiteLLM: config validation failed: "
OK_PREFIX = "LiteLLM: config OK"
# Variables of the caller's shell kept for LiteLLM; everything else stays out (a DATABASE_URL
# or REDIS_HOST there would make LiteLLM connect, and secrets have no business in a check).
_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
TIMEOUT_S = 300.0

Runner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class LiteLLMCheck:
    outcome: Outcome
    detail: str  # LiteLLM's line (ok or its error), or why it did not run

    def as_json(self) -> dict[str, str]:
        return {"outcome": self.outcome, "detail": self.detail}


def check_environment(home: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEPT}
    if home is not None:
        env["HOME"] = home
    env.update(
        {
            # Not the gateway's key: a check must not need (or read) llmctl's secret files.
            "LITELLM_MASTER_KEY": "sk-llmctl-validate-" + "0" * 32,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map from the network
            "LITELLM_MODE": "PRODUCTION",  # no .env read from the working directory
        }
    )
    return env


def check_gateway_file(
    text: str, entry_point: Path | None, *, run: Runner = subprocess.run, timeout: float = TIMEOUT_S
) -> LiteLLMCheck:
    """Have LiteLLM load `text` as its config. `entry_point`: the `litellm` script, if installed."""
    if entry_point is None:
        return LiteLLMCheck("not-installed", "LiteLLM is not installed (gateway.command not found)")
    try:
        python = litellm_python(entry_point)
    except LlmctlError as err:
        return LiteLLMCheck("not-installed", err.message)
    if not python.exists():
        return LiteLLMCheck("not-installed", f"LiteLLM's python {python} does not exist")
    with tempfile.TemporaryDirectory(prefix="llmctl-litellm-check-") as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(text, encoding="utf-8")
        argv: Sequence[str] = [str(python), "-I", "-c", _VALIDATE, str(path), str(LITELLM_HOOKS_DIR)]
        try:
            done = run(
                argv,
                cwd=tmp,
                env=check_environment(home=tmp),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return LiteLLMCheck("refused", f"LiteLLM's config check did not finish in {timeout:.0f} s")
        except OSError as err:
            return LiteLLMCheck("not-installed", f"cannot run {python}: {err.strerror}")
    lines = [line.strip() for line in f"{done.stdout}\n{done.stderr}".splitlines() if line.strip()]
    if done.returncode == 0:
        ok = next((line for line in lines if line.startswith(OK_PREFIX)), OK_PREFIX)
        return LiteLLMCheck("accepted", ok)
    failed = next((line for line in lines if line.startswith(FAILED_PREFIX)), None)
    if failed is not None:
        return LiteLLMCheck("refused", failed.removeprefix(FAILED_PREFIX))
    if any("No module named 'litellm" in line for line in lines):
        return LiteLLMCheck("not-installed", f"{python} has no litellm[proxy]")
    return LiteLLMCheck("refused", " / ".join(lines[-3:]) or f"exit status {done.returncode}")
