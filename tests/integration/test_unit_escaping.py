"""The real systemd parser as the oracle for what llmctl writes into unit files.

Hundreds of generated configs — paths, arguments and environment values full of quotes,
backslashes, `%`, `$`, `;`, spaces and non-ASCII — are rendered by llmctl, installed, and
started in the real user manager with a command that dumps the argv and environment it was
given. What arrives must be exactly what the config said. (tests/render/test_escape_property.py
checks thousands more cases against a Python model of the same rules; this test keeps that
model honest.)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmctl.backends import adapter_for
from llmctl.config.load import parse_config
from llmctl.errors import ConfigError
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from tests.conftest import dump
from tests.integration.conftest import UserManager

CASES = int(os.environ.get("LLMCTL_ESCAPING_CASES", "200"))
SPECIAL = [*list(" \"'\\%$;=#[]{}`*?~é-@+!:"), "%h", "%%", "$HOME", "${MAINPID}", "$$", "\\n", "a b", ";"]

DUMP = """#!{python}
import json, os, sys
target = os.environ["DUMP_TO"]
with open(target + ".tmp", "w") as out:
    json.dump({{"argv": sys.argv, "env": {{k: v for k, v in os.environ.items() if k.startswith("T_")}}}}, out)
os.replace(target + ".tmp", target)  # whole or not at all: the test reads it as soon as it exists
"""


def text(rng: random.Random, size: int = 6, alphabet: list[str] | None = None) -> str:
    chars = alphabet or [*SPECIAL, "x", "Y", "7"]
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, size)))


# systemd refuses quotes and backslashes in an executable's path outright (llmctl's config check
# says so); everything else special may appear in the directory the executable lives in.
PATH_CHARS = [c for c in [*SPECIAL, "x", "Y", "7"] if not any(q in c for q in "\\\"'")]


def test_rendered_argv_and_environment_reach_the_process_exactly(
    user_manager: UserManager, tmp_path: Path
) -> None:
    rng = random.Random(20261123)  # noqa: S311 - test data, not secrets
    script = tmp_path / "dump.py"
    script.write_text(DUMP.format(python=sys.executable))
    script.chmod(0o755)
    options_base = Paths.from_env()
    cases: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    refused = 0
    units: dict[str, str] = {}
    for i in range(CASES):
        # The executable's own path is generated too: a directory named with special characters.
        folder = (
            tmp_path / "bin" / str(i) / (text(rng, alphabet=PATH_CHARS).replace("/", "_").strip(".") or "x")
        )
        folder.mkdir(parents=True, exist_ok=True)
        command = folder / "llama-server"
        command.symlink_to(script)
        out = tmp_path / f"out-{i}.json"
        env = {f"T_{j}": text(rng) for j in range(rng.randint(0, 3))}
        env["DUMP_TO"] = str(out)
        args = [text(rng) for _ in range(rng.randint(0, 4))]
        name = f"esc{i}"
        config_text = dump(
            {
                "version": 1,
                "backends": {
                    name: {
                        "kind": "llama-server",
                        "command": str(command),
                        "port": 20000 + i,
                        "model": "m",
                        "environment": env,
                        "args": args,
                        "gpus": [],
                    },
                },
                "models": {
                    "m": {"backend": name, "source": str(tmp_path / f"{text(rng)}.gguf".replace("/", "_"))}
                },
                "gateway": {"enabled": False},
                "supervisor": {"enabled": False},
            }
        )
        try:
            config, _ = parse_config(config_text)
        except ConfigError:
            refused += 1  # e.g. a newline: refused with a message, never rendered
            continue
        options = RenderOptions(config_path=tmp_path / "c.yaml", paths=options_base, resolve=Path)
        stack = render_stack(config, options)
        unit = f"llmctl-{name}.service"
        units[unit] = stack.files[f"systemd/user/{unit}"]
        launch = adapter_for(config.backends[name].kind).launch(
            config.backends[name], str(command), "m", config.models["m"]
        )
        cases[unit] = (launch.argv, {k: v for k, v in env.items() if k.startswith("T_")}, out)
    assert len(cases) > CASES * 0.8, f"too many refused ({refused})"
    for unit, body in units.items():
        (user_manager.unit_dir / unit).write_text(body)
    try:
        subprocess.run(["systemctl", "--user", "daemon-reload"], check=True)
        started = subprocess.run(
            ["systemctl", "--user", "start", "--no-block", *cases],
            capture_output=True,
            text=True,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(out.exists() for _, _, out in cases.values()):
            time.sleep(0.2)
        mismatches = []
        for unit, (argv, env, out) in cases.items():
            if not out.exists():
                mismatches.append(f"{unit}: never ran")
                continue
            seen = json.loads(out.read_text())
            # argv[0] of a script is its path as given to exec: the symlink we rendered.
            if seen["argv"][1:] != argv[1:] or seen["env"] != env:
                mismatches.append(
                    f"{unit}: argv {seen['argv'][1:]} != {argv[1:]} or env {seen['env']} != {env}"
                )
        if mismatches:
            first = mismatches[0].split(":")[0]
            journal = subprocess.run(
                [
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "cat",
                    "-n",
                    "15",
                    "--user-unit",
                    first,
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            print((user_manager.unit_dir / first).read_text(), journal)
        assert mismatches == [], "\n".join(mismatches[:10])
    finally:
        subprocess.run(["systemctl", "--user", "stop", *cases], check=False, capture_output=True)
        for unit in units:
            (user_manager.unit_dir / unit).unlink(missing_ok=True)
        subprocess.run(["systemctl", "--user", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "--user", "reset-failed"], check=False)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    """The units fail their readiness gate on purpose (the dump script is no server)."""
