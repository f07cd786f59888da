"""Property: any config is either refused with a clear error, or renders units whose ExecStart
argv and Environment pairs, as systemd parses them, are exactly the intended ones, with the
same set of directives. Names, paths, environment values and args are generated."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmctl.backends import adapter_for
from llmctl.config.load import parse_config
from llmctl.errors import ConfigError, LlmctlError
from llmctl.paths import Paths
from llmctl.render.units import RenderOptions, render_stack
from tests import systemd_syntax
from tests.conftest import dump

# Characters that are special somewhere in a unit file, plus ordinary and non-ASCII ones.
NASTY = st.sampled_from([*" \t\n\r\"'\\%$;=#[]{}`*?~é\u00a0-@+!:/", "%h", "$HOME", "${MAINPID}", "\\n"])
TEXT = st.lists(st.one_of(NASTY, st.text(min_size=1, max_size=4)), max_size=8).map("".join)
PATH = st.builds(
    lambda parts: "/" + "/".join(parts), st.lists(TEXT.filter(lambda s: "/" not in s), min_size=1, max_size=3)
)
NAME = st.one_of(st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True), TEXT)
ENV_NAME = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True), TEXT)

EXPECTED_DIRECTIVES = {
    ("Unit", "Description"), ("Unit", "PartOf"), ("Unit", "StartLimitIntervalSec"),
    ("Unit", "StartLimitBurst"), ("Service", "Type"), ("Service", "ExecStart"),
    ("Service", "ExecStartPost"), ("Service", "Restart"), ("Service", "RestartSec"),
    ("Service", "TimeoutStartSec"), ("Service", "TimeoutStopSec"), ("Service", "KillMode"),
    ("Service", "SyslogIdentifier"), ("Service", "SuccessExitStatus"), ("Install", "WantedBy"),
}  # fmt: skip


def options(home: Path) -> RenderOptions:
    return RenderOptions(
        config_path=Path("/c.yaml"),
        paths=Paths(home=home, config_home=home / ".config", state_home=home / ".state"),
        llmctl_argv=("/venv/bin/python", "-m", "llmctl"),
        resolve=Path,
    )


@settings(
    max_examples=int(os.environ.get("LLMCTL_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=NAME,
    kind=st.sampled_from(["llama-server", "llama-cpp-python", "vllm", "ollama"]),
    command=PATH,
    source=PATH.map(lambda p: p + ".gguf"),
    model_id=st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,20}", fullmatch=True), TEXT),
    env=st.dictionaries(ENV_NAME, TEXT, max_size=3),
    args=st.lists(TEXT, max_size=5),
)
def test_every_config_is_refused_or_renders_exactly(
    name: str, kind: str, command: str, source: str, model_id: str, env: dict[str, str], args: list[str]
) -> None:
    backend: dict[str, Any] = {
        "kind": kind,
        "command": command,
        "port": 8080,
        "environment": env,
        "args": args,
    }
    model: dict[str, Any] = {"backend": name, "source": source if kind != "vllm" else "/models/dir"}
    if kind == "ollama":
        model["source"] = "llama3:8b"
    else:
        backend["model"] = model_id
    config_dict = {
        "version": 1,
        "backends": {name: backend},
        "models": {model_id: model},
        "gateway": {"enabled": False},
    }
    try:
        config, _ = parse_config(dump(config_dict))
    except ConfigError as err:
        assert err.details and all(":" in d for d in err.details)  # names a path, says what
        return
    try:
        stack = render_stack(config, options(Path("/home/u")))
    except LlmctlError as err:  # pragma: no cover - nothing reaches here today
        assert err.message
        return
    text = stack.files[f"systemd/user/llmctl-{name}.service"]
    directives = systemd_syntax.parse_unit(text)
    keys = Counter((s, k) for s, k, _ in directives)
    assert set(keys) - {("Service", "Environment"), ("Service", "UnsetEnvironment")} == EXPECTED_DIRECTIVES
    assert all(keys[k] == 1 for k in EXPECTED_DIRECTIVES)

    adapter = adapter_for(config.backends[name].kind)
    served = model_id if kind != "ollama" else None
    launch = adapter.launch(
        config.backends[name], str(Path(command)), served, config.models[model_id] if served else None
    )
    [exec_start] = [v for s, k, v in directives if k == "ExecStart"]
    assert systemd_syntax.exec_argv(exec_start) == launch.argv
    environment = systemd_syntax.environment([v for s, k, v in directives if k == "Environment"])
    assert environment == {**launch.environment, **env}
