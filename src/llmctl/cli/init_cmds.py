"""`llmctl init`: write a starter config from what this machine has (or, with --demo, the demo's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llmctl.cli.context import AppContext
from llmctl.cli.output import emit_json, json_option
from llmctl.errors import ExitCode, LlmctlError

if TYPE_CHECKING:
    from llmctl.init import Detection, WriteResult

_PATH = click.Path(path_type=Path)
DEMO_ONLY = ("port_base", "model", "llama_server", "llama_cpp_python", "litellm")


@click.command()
@click.option("--force", is_flag=True, help="Replace an existing config (it is snapshotted first).")
@click.option(
    "--demo", is_flag=True, help="Write the demo config: llama-server and llama-cpp-python on one model."
)
@click.option(
    "--port-base", type=click.IntRange(1, 65533), help="--demo: first of three ports [default: 18080]."
)
@click.option(
    "--model", type=_PATH, help="--demo: the GGUF both serve [default: the smoke model, written if missing]."
)
@click.option("--llama-server", type=_PATH, help="--demo: llama-server [default: found on this machine].")
@click.option(
    "--llama-cpp-python", type=_PATH, help="--demo: a python with llama_cpp.server [default: found]."
)
@click.option("--litellm", type=_PATH, help="--demo: LiteLLM's `litellm` [default: found].")
@click.option(
    "--from-litellm",
    "from_litellm",
    type=_PATH,
    metavar="PATH",
    help="Import a LiteLLM proxy config (its config.yaml): models, keys, fallbacks, settings.",
)
@json_option
@click.pass_obj
def init(
    app: AppContext,
    force: bool,
    demo: bool,
    port_base: int | None,
    model: Path | None,
    llama_server: Path | None,
    llama_cpp_python: Path | None,
    litellm: Path | None,
    from_litellm: Path | None,
    as_json: bool,
) -> int:
    """Detect backends, models and GPUs, and write a starter config for them.

    Looks for Ollama, llama-server, llama-cpp-python, vLLM and LiteLLM on PATH and in
    ~/.local/bin, ~/venvs, ~/.venvs, pipx and ~/llama.cpp/build/bin; GGUF files in ~/models,
    ~/.cache/llama.cpp, ~/.local/share/llama.cpp and $LLAMA_CACHE; the models of a running
    Ollama; GPUs. Prints what it found and chose. Never replaces a config without --force.

    With --from-litellm PATH, the config is imported from a LiteLLM proxy config instead: its
    cloud models (literal keys move into the 0600 secrets.env), its local entries mapped to
    backends by port and by what runs here, its fallbacks and settings. It prints what it
    mapped, guessed and could not map, and why.
    """
    from llmctl import init as init_mod  # noqa: PLC0415

    given = {"port_base": port_base, "model": model, "llama_server": llama_server}
    given |= {"llama_cpp_python": llama_cpp_python, "litellm": litellm}
    if not demo and any(v is not None for v in given.values()):
        used = ", ".join("--" + k.replace("_", "-") for k, v in given.items() if v is not None)
        raise click.UsageError(f"{used}: only with --demo")
    if from_litellm is not None:
        if demo:
            raise click.UsageError("--from-litellm and --demo: give one of them")
        from llmctl.cli.init_import import import_from_litellm  # noqa: PLC0415

        return import_from_litellm(app, from_litellm, force=force, as_json=as_json)
    sources = init_mod.Sources(home=app.paths.home, env=os.environ)
    config_path = app.config_path
    if demo:
        detection = init_mod.detect(sources, models=False)
        text, chosen = _demo(app, detection, force, port_base, model, llama_server, llama_cpp_python, litellm)
    else:
        from llmctl.procs import port_in_use  # noqa: PLC0415

        detection = init_mod.detect(sources)
        result = init_mod.plan(detection, lambda port: port_in_use("127.0.0.1", port), app.paths.home)
        text = init_mod.render_plan(result, detection, app.paths.home)
        chosen = [{"what": c.what, "why": c.why} for c in result.choices]
    written = init_mod.write_config(config_path, text, force=force, paths=app.paths)
    if as_json:
        emit_json(
            "init",
            {
                "config_path": str(config_path),
                "action": written.action,
                "snapshot": written.snapshot,
                "demo": demo,
                "found": detection.as_dict(),
                "chosen": chosen,
            },
        )
        return 0
    if not demo:
        for line in init_mod.found_lines(detection, app.paths.home):
            click.echo(line)
    click.echo("chose:")
    for choice in chosen:
        click.echo(f"  {choice['what']}: {choice['why']}")
    report_written(written)
    return 0


def report_written(written: WriteResult) -> None:
    if written.action == "unchanged":
        click.echo(f"{written.path} already holds this config (unchanged)")
        return
    click.echo(f"{'replaced' if written.action == 'replaced' else 'wrote'} {written.path}")
    if written.snapshot:
        click.echo(
            f"snapshot {written.snapshot} holds the previous config (llmctl snapshot show {written.snapshot})"
        )
    click.echo("next: llmctl validate --strict; llmctl doctor; llmctl up")


def _demo(
    app: AppContext,
    detection: Detection,
    force: bool,
    port_base: int | None,
    model: Path | None,
    llama_server: Path | None,
    llama_cpp_python: Path | None,
    litellm: Path | None,
) -> tuple[str, list[dict[str, Any]]]:
    from llmctl import init as init_mod  # noqa: PLC0415

    chosen: list[dict[str, Any]] = []
    problems: list[str] = []

    def executable(option: str, given: Path | None, kind: str) -> Path:
        if given is not None:
            path = given.expanduser().absolute()
            if not (path.is_file() and os.access(path, os.X_OK)):
                problems.append(f"--{option} {given}: not an executable file")
            chosen.append({"what": f"{kind}: {path}", "why": f"--{option}"})
            return path
        found = detection.first(kind)
        if found is None:
            problems.append(f"{kind}: none found on PATH or in the usual virtualenvs; give --{option} PATH")
            return Path()
        chosen.append({"what": f"{kind}: {found.path}", "why": f"found in {found.where}"})
        return found.path

    server = executable("llama-server", llama_server, "llama-server")
    python = executable("llama-cpp-python", llama_cpp_python, "llama-cpp-python")
    proxy = executable("litellm", litellm, "litellm")
    if model is not None:
        model_path = model.expanduser().absolute()
        if not model_path.is_file():
            problems.append(f"--model {model}: no such file (llmctl model smoke PATH writes a smoke model)")
        chosen.append({"what": f"model: {model_path}", "why": "--model"})
    else:
        model_path = app.paths.state_dir / "demo" / "smoke.gguf"
    if problems:
        raise LlmctlError(
            f"cannot write the demo config: {len(problems)} problem(s)",
            details=problems,
            exit_code=ExitCode.USAGE,
        )
    base = port_base if port_base is not None else init_mod.DEMO_PORT_BASE
    chosen.append({"what": f"ports {base}-{base + 2}", "why": "native, pyserver, gateway"})
    text = init_mod.demo_config(
        llama_server=server, llama_cpp_python=python, litellm=proxy, model=model_path, port_base=base
    )
    if model is None:
        # Refuse before writing anything: the model is only written for a config that will be.
        init_mod.write_action(app.config_path, text, force=force)
        made = init_mod.ensure_smoke_model(model_path)
        why = "wrote the smoke model (random weights)" if made else "the smoke model written earlier"
        chosen.insert(3, {"what": f"model: {model_path}", "why": why})
    return text, chosen


def register(group: click.Group) -> None:
    group.add_command(init)
