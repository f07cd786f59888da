"""The integration tests run llmctl as users install it (issue 13): the checkout's wheel,
pipx-installed by conftest's `installed_llmctl`. These tests prove that this llmctl is really
the wheel's, and that everything it reads at run time ships in the wheel: unit templates,
runbooks, the JSON schema, the gateway child and its LiteLLM hooks. A file read from the
checkout instead (a force-include forgotten in pyproject.toml) fails here: the commands run
with the checkout hidden, and the processes the units start are checked to be the wheel's."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from llmctl.gateway_runtime import AUTH_HOOK
from llmctl.gateway_runtime.interpreter import litellm_python
from tests.integration.conftest import (
    LLMCTL,
    LLMCTL_PYTHON,
    LLMCTL_VENV,
    REPO,
    Provisioned,
    UserManager,
    free_port,
    json_result,
    unavailable,
)

SRC = REPO / "src" / "llmctl"


def checkout_files_that_must_ship() -> set[str]:
    """Every file the installed package needs, as its path in the wheel: the whole package
    (the gateway child, the LiteLLM hooks, result.schema.json beside the modules) and the two
    force-included directories."""
    wanted = {
        "llmctl/" + path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    wanted |= {f"llmctl/units/{p.name}" for p in (REPO / "units").glob("*.j2")}
    wanted |= {f"llmctl/runbooks/{p.name}" for p in (REPO / "docs" / "runbooks").glob("*.md")}
    return wanted


def installed(code: str) -> str:
    """Run `code` in the pipx venv's python, isolated (-I: no cwd, no PYTHONPATH on sys.path)."""
    return subprocess.run(
        [str(LLMCTL_PYTHON), "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def installed_schema() -> dict[str, Any]:
    """result.schema.json as the installed package holds it (not the checkout's copy)."""
    text = installed(
        "import importlib.resources as r; print(r.files('llmctl.cli').joinpath('result.schema.json').read_text())"
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_the_wheel_ships_templates_runbooks_schema_and_gateway_child() -> None:
    files = set(json.loads(installed("import importlib.metadata as m, json; "
                                     "print(json.dumps([str(f) for f in m.files('llmctl')]))")))  # fmt: skip
    wanted = checkout_files_that_must_ship()
    # The named ones first, so that a failure says what is missing rather than "some file".
    for name in (
        "llmctl/units/backend.service.j2",
        "llmctl/units/gateway.service.j2",
        "llmctl/runbooks/model-out-of-memory.md",
        "llmctl/cli/result.schema.json",
        "llmctl/gateway_runtime/child.py",
        "llmctl/gateway_runtime/litellm_hooks/llmctl_gateway_auth.py",
    ):
        assert name in wanted and name in files, name
    assert sorted(wanted - files) == []
    # ... and the package that runs is that venv's, with its data directories beside it.
    where = json.loads(
        installed(
            "import json, llmctl, llmctl.runbooks as r, llmctl.render.units as u, "
            "llmctl.gateway_runtime.child as c; print(json.dumps([llmctl.__file__, "
            "str(u.templates_dir()), str(r.runbooks_dir()), str(c.HOOKS_DIR)]))"
        )
    )
    for path in where:
        assert Path(path).is_relative_to(LLMCTL_VENV), where
        assert Path(path).exists(), path
    assert Path(LLMCTL[0]).is_file()
    assert Path(LLMCTL[0]).read_text().startswith(f"#!{LLMCTL_PYTHON}")


def with_checkout_hidden(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run argv in a private mount namespace where an empty tmpfs covers the checkout, so that
    nothing can be read from it (root ignores file modes, and an ordinary user can read a
    world-readable checkout: hiding it is the only sure way).

    Root mounts in a new mount namespace. An ordinary user may mount only as root of a user
    namespace of its own, so the tmpfs is mounted there and argv then runs in a second user
    namespace that maps the user back to its own uid and gid: llmctl sees the ids it has
    outside (its journal matches and file owners name them), and the user manager, which
    checks its peer's real uid, still answers."""
    repo = shlex.quote(str(REPO))
    run = shlex.join(argv)
    if os.geteuid() != 0:
        run = f"unshare --map-user={os.geteuid()} --map-group={os.getegid()} -- {run}"
        outer = ["unshare", "--map-root-user", "--mount", "--propagation", "private"]
    else:
        outer = ["unshare", "--mount", "--propagation", "private"]
    script = f'mount -t tmpfs llmctl-hidden {repo} && test -z "$(ls -A {repo})" && exec {run}'
    try:
        return subprocess.run(
            [*outer, "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
        )
    except FileNotFoundError as exc:
        unavailable(f"unshare is needed to hide the checkout: {exc}")


def require_hidden_checkout() -> None:
    # The namespace's script checks that the checkout reads as empty before it runs anything.
    probe = with_checkout_hidden("id", "-u")
    if probe.returncode != 0:
        unavailable(f"cannot hide the checkout in a mount namespace: {probe.stderr.strip()}")
    assert probe.stdout.strip() == str(os.geteuid())  # the command runs with our own uid


def write_config(path: Path, provisioned: Provisioned, smoke_model: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "backends": {
                    "native": {
                        "kind": "llama-server",
                        "command": str(provisioned.llama_server),
                        "port": free_port(),
                        "model": "smoke",
                        "gpus": [],
                    },
                },
                "models": {"smoke": {"backend": "native", "source": str(smoke_model), "context": 512}},
                "gateway": {"command": str(provisioned.litellm), "port": free_port()},
                "supervisor": {"metrics": {"port": free_port()}},
            }
        )
    )
    return path


@pytest.fixture
def config(tmp_path: Path, provisioned: Provisioned, smoke_model: Path) -> Path:
    return write_config(tmp_path / "llmctl.yaml", provisioned, smoke_model)


def test_installed_llmctl_runs_with_the_checkout_hidden(
    config: Path, tmp_path: Path, provisioned: Provisioned
) -> None:
    assert not config.is_relative_to(REPO) and not tmp_path.is_relative_to(REPO)
    require_hidden_checkout()
    native_port = yaml.safe_load(config.read_text())["backends"]["native"]["port"]

    # Runbooks: the list names every runbook of docs/runbooks, and one prints filled in.
    listed = with_checkout_hidden(*LLMCTL, "--config", str(config), "runbook")
    assert listed.returncode == 0, listed.stderr
    for page in (REPO / "docs" / "runbooks").glob("*.md"):
        assert page.stem in listed.stdout, page.stem
    first_line = (REPO / "docs" / "runbooks" / "backend-does-not-start.md").read_text().splitlines()[0]
    book = with_checkout_hidden(*LLMCTL, "--config", str(config), "runbook", "backend-does-not-start")
    assert book.returncode == 0, book.stderr
    # Filled in from the config: the backend's name and port, not the template's placeholders.
    assert first_line.lstrip("# ") in book.stdout
    assert f"native: port {native_port} is already in use" in book.stdout

    # The --json envelope is what the schema in the wheel describes.
    as_json = with_checkout_hidden(*LLMCTL, "--config", str(config), "runbook", "--json")
    assert as_json.returncode == 0, as_json.stderr
    jsonschema.validate(json.loads(as_json.stdout), installed_schema())

    # Render: the unit templates come from the wheel, and every llmctl command in a unit runs
    # the pipx venv's interpreter (what `up` installs is what `render --out` writes).
    out = tmp_path / "out"
    rendered = with_checkout_hidden(*LLMCTL, "--config", str(config), "render", "--out", str(out))
    assert rendered.returncode == 0, rendered.stderr
    units = {p.name: p.read_text() for p in (out / "systemd" / "user").iterdir()}
    assert {"llmctl-native.service", "llmctl-gateway.service", "llmctl-supervisor.service"} <= set(units)
    lines = [line for text in units.values() for line in text.splitlines() if " -m llmctl " in f"{line} "]
    assert any(line.startswith(f"ExecStart={LLMCTL_PYTHON} -m llmctl ") for line in lines), lines
    assert any(line.startswith(f"ExecStartPost={LLMCTL_PYTHON} -m llmctl wait-ready") for line in lines)
    for line in lines:
        assert f"={LLMCTL_PYTHON} -m llmctl" in line or f" {LLMCTL_PYTHON} -m llmctl" in line, line
        assert sys.executable not in line, line  # not the dev venv's python

    # The gateway child's LiteLLM hook, from the wheel, under LiteLLM's python: the hook
    # imports from the installed hooks directory (gateway.yaml names it as AUTH_HOOK).
    hooks_dir = installed("import llmctl.gateway_runtime.child as c; print(c.HOOKS_DIR)").strip()
    assert Path(hooks_dir).is_relative_to(LLMCTL_VENV)
    module, _, function = AUTH_HOOK.rpartition(".")
    hook = with_checkout_hidden(
        "env", f"PYTHONPATH={hooks_dir}", str(litellm_python(provisioned.litellm)), "-c",
        f"import {module}; assert callable({module}.{function}); print({module}.__file__)",
    )  # fmt: skip
    assert hook.returncode == 0, hook.stderr
    assert Path(hook.stdout.strip()).is_relative_to(LLMCTL_VENV)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.fixture
def stack(config: Path, user_manager: UserManager) -> Iterator[Path]:
    try:
        yield config
    finally:
        subprocess.run(
            [*LLMCTL, "--config", str(config), "down"], capture_output=True, check=False, timeout=300
        )
        user_manager.forget_llmctl_units()


def test_up_with_the_checkout_hidden_runs_the_wheel(stack: Path) -> None:
    """`up` itself with no checkout to read from; then what the units run is the wheel's:
    llmctl's own units run the pipx venv's python, the gateway's LiteLLM child runs the
    wheel's child.py, and its auth hook (from the wheel's litellm_hooks) answers 401."""
    require_hidden_checkout()
    llmctl = [*LLMCTL, "--config", str(stack)]
    up = with_checkout_hidden(*llmctl, "up", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr

    status = subprocess.run(
        [*llmctl, "status", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert status.returncode == 0, status.stdout
    jsonschema.validate(json.loads(status.stdout), installed_schema())
    units = {u["name"]: u for u in json_result(status.stdout)["units"]}
    assert set(units) == {"native", "gateway", "supervisor"}
    for name in ("gateway", "supervisor"):
        argv = cmdline(units[name]["main_pid"])
        assert argv[:3] == [str(LLMCTL_PYTHON), "-m", "llmctl"], (name, argv)
    child_scripts = [
        arg
        for pid in children(units["gateway"]["main_pid"])
        for arg in cmdline(pid)
        if arg.endswith("child.py")
    ]
    assert child_scripts and all(Path(a).is_relative_to(LLMCTL_VENV) for a in child_scripts), child_scripts

    port = yaml.safe_load(stack.read_text())["gateway"]["port"]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "smoke", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    refused = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-not-the-key"}, timeout=60)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    key = subprocess.run(
        [*llmctl, "gateway", "key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    answered = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert answered.status_code == 200, answered.text
