"""`llmctl init --from-litellm PATH`: an llmctl config from a LiteLLM proxy config.

Each `model_list` entry becomes a model: a provider's (remote: provider, model, api_base and
the name of the variable its key is in) or a local backend's. A local entry is one whose
api_base is a loopback address (or an Ollama one without api_base); its backend is what
answers on that port (`/v1/models` says who owns the model), else the port's usual owner
(Ollama 11434, llama-cpp-python 8000, llama-server 8080, vLLM 8001), else what the provider
prefix says (a guess). What it serves: an Ollama tag is in the entry; a GGUF file is not, so it
is what the running server reports, else the one GGUF file found on this machine whose name
matches the entry (a guess), else the entry is not mapped.

Secrets: a source `os.environ/NAME` stays NAME. A literal key moves into secrets.env (0600,
read by the gateway's unit) under a generated name, and the config refers to that name; the
value is in no other file, line of output, or argv. Settings are carried by
`llmctl.init.from_litellm_settings`. Every entry gets a report line: mapped, guessed (carried,
but something was inferred: check it) or unmapped (left out), with why.

The import is a pure function of the source, what detection found, what answers on the
ports, and the secrets already in secrets.env; writing is the caller's (`llmctl.cli.init_cmds`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmctl.init.detection import Detection
from llmctl.init.litellm_source import ENV_NAME, Report, ReportEntry, env_reference
from llmctl.init.local_servers import (
    OWNER_KINDS,
    PORT_KINDS,
    PROVIDER_KINDS,
    Probe,
    Served,
    no_probe,
    probe_port,
)
from llmctl.init.starter import BACKEND_NAMES

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
PROVIDER = re.compile(r"^[a-z0-9_]{1,40}$")
API_BASE = re.compile(r"^https?://[^\s]+$")
API_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
# What llmctl's remote models carry of an entry's litellm_params.
REMOTE_KEYS = ("model", "api_base", "api_key", "api_version")
# Parameters of an entry that tune a deployment but do not decide where a request goes:
# left out (reported) without losing the route.
TUNING = frozenset(
    {
        "rpm", "tpm", "timeout", "stream_timeout", "max_retries", "weight", "order",
        "max_parallel_requests", "temperature", "max_tokens", "top_p", "stream",
        "input_cost_per_token", "output_cost_per_token", "drop_params", "tags",
    }
)  # fmt: skip
# Dummy keys people give local servers that want none.
NO_KEY = frozenset({"", "none", "null", "not-needed", "not_needed", "no-key", "sk-no-key", "dummy", "x"})
UNNAMED_PREFIXES = {("gpt-", "o1", "o3", "o4-", "chatgpt-"): "openai", ("claude-",): "anthropic"}


@dataclass
class Import:
    """The imported config and what became of each entry. `secrets` holds values: never
    render it (as_dict lists the names only)."""

    source: Path
    config: dict[str, Any]
    report: list[ReportEntry]
    secrets: dict[str, str] = field(repr=False)  # NAME -> value, new in secrets.env
    needed: list[str] = field(default_factory=list)  # names the config reads that secrets.env lacks

    def counts(self) -> dict[str, int]:
        out = {"mapped": 0, "guessed": 0, "unmapped": 0}
        for entry in self.report:
            out[entry.outcome] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "counts": self.counts(),
            "report": [e.as_dict() for e in self.report],
            "secrets_moved": sorted(self.secrets),
            "secrets_needed": self.needed,
        }


def _norm(text: str) -> str:
    """A model's name reduced for matching against file names: gemma-3-270m.Q4_K_M ~ gemma3270mq4km."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


class _Importer:
    def __init__(
        self,
        detection: Detection,
        probe: Probe,
        existing_secrets: Mapping[str, str],
        report: Report,
    ) -> None:
        self.detection = detection
        self.probe = probe
        self.existing = dict(existing_secrets)
        self.report = report
        self.backends: dict[str, dict[str, Any]] = {}
        self.by_address: dict[tuple[str, int], str] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, str] = {}  # model id -> the entry it came from
        self.secrets: dict[str, str] = {}
        self.referenced: set[str] = set()  # os.environ/ names the source uses
        self.probed: dict[int, Served | None] = {}

    # -- secrets -------------------------------------------------------------------------------

    def secret_name(self, provider: str, value: str) -> str:
        """The variable a literal key moves to: reused if that value is there already, else
        <PROVIDER>_API_KEY, numbered past names that are taken."""
        for name, known in (*self.secrets.items(), *self.existing.items()):
            if known == value:
                return name
        base = re.sub(r"[^A-Z0-9_]", "_", provider.upper()) + "_API_KEY"
        name, n = base, 2
        while name in self.secrets or name in self.existing or name in self.referenced:
            name, n = f"{base}_{n}", n + 1
        self.secrets[name] = value
        return name

    # -- what runs here ------------------------------------------------------------------------

    def served(self, port: int) -> Served | None:
        if port not in self.probed:
            self.probed[port] = self.probe(port)
        return self.probed[port]

    def backend_for(self, kind: str, host: str, port: int) -> str:
        key = (host, port)
        if key in self.by_address:
            return self.by_address[key]
        base = BACKEND_NAMES.get(kind, kind)
        name, n = base, 2
        while name in self.backends:
            name, n = f"{base}-{n}", n + 1
        entry: dict[str, Any] = {"kind": kind, "command": "", "port": port}
        if host != "127.0.0.1":
            entry["host"] = host
        if not self.detection.gpus:
            entry["gpus"] = []
        found = self.detection.first(kind)
        where = f"backend {name} ({kind} on {host}:{port})"
        if found is not None:
            entry["command"] = str(found.path)
            self.report.mapped(where, f"command {found.path} (found in {found.where})", f"backends.{name}")
        else:
            entry["command"] = "python3" if kind == "llama-cpp-python" else kind
            self.report.guessed(
                where,
                f"no {kind} found on this machine; command: {entry['command']} (install it, or set "
                f"backends.{name}.command)",
                f"backends.{name}",
            )
        self.backends[name] = entry
        self.by_address[key] = name
        return name

    # -- one model_list entry ------------------------------------------------------------------

    def entry(self, index: int, item: Any) -> None:
        name = item.get("model_name") if isinstance(item, dict) else None
        label = f"model_list[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        params = item.get("litellm_params") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or not isinstance(params, dict)
            or not isinstance(params.get("model"), str)
        ):
            self.report.unmapped(label, "needs model_name and litellm_params.model (strings)")
            return
        if "*" in name or "*" in params["model"]:
            self.report.unmapped(label, "a wildcard route: llmctl routes each model id by name")
            return
        if not MODEL_ID.match(name):
            self.report.unmapped(
                label, f"'{name}' is not an llmctl model id (letters, digits and ._:/@+-, up to 128)"
            )
            return
        if name in self.models:
            self.report.unmapped(
                label,
                f"a second deployment of {name} (already mapped from {self.sources[name]}); llmctl "
                "routes one deployment per model id, so LiteLLM's load balancing over both is not carried",
            )
            return
        provider, _, rest = params["model"].partition("/")
        if not rest:
            provider, rest = "", params["model"]
        api_base = params.get("api_base")
        if env_reference(api_base) is not None:
            self.report.unmapped(
                label, "its api_base comes from the environment; llmctl needs the URL itself"
            )
            return
        if api_base is not None and (not isinstance(api_base, str) or not API_BASE.match(api_base)):
            self.report.unmapped(label, "api_base is not an http(s) URL")
            return
        local = self.local_address(provider, api_base)
        if local is None:
            self.remote(label, name, provider, rest, api_base, params)
        else:
            self.local(label, name, provider, rest, local, params)

    @staticmethod
    def local_address(provider: str, api_base: str | None) -> tuple[str, int] | None:
        """(host, port) of a server on this machine, or None for a remote one."""
        if api_base is None:
            return ("127.0.0.1", 11434) if provider in ("ollama", "ollama_chat") else None
        parts = urlsplit(api_base)
        host = (parts.hostname or "").lower()
        loopback = host in ("localhost", "0.0.0.0", "::1", "::") or host.startswith("127.")  # noqa: S104
        if not loopback:
            return None
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        # 0.0.0.0 and localhost as a client's address are this machine; llmctl binds loopback.
        return ("127.0.0.1" if host in ("localhost", "0.0.0.0", "::") else host, port)  # noqa: S104

    def dropped_params(self, params: dict[str, Any], carried: set[str]) -> list[str]:
        return sorted(k for k in params if k not in carried)

    # -- remote ---------------------------------------------------------------------------------

    def remote(
        self, label: str, name: str, provider: str, model: str, api_base: str | None, params: dict[str, Any]
    ) -> None:
        guessed = ""
        if not provider:
            provider = next((p for prefixes, p in UNNAMED_PREFIXES.items() if model.startswith(prefixes)), "")
            guessed = f"no provider prefix: {provider}/ from the model's name" if provider else ""
        problem = self.remote_problem(provider, model, params)
        if problem is not None:
            self.report.unmapped(label, problem)
            return
        remote: dict[str, Any] = {"provider": provider, "model": model}
        why = [f"{provider}/{model}" + (f" at {api_base}" if api_base else "")]
        if api_base is not None:
            remote["api_base"] = api_base
        if params.get("api_version") is not None:
            remote["api_version"] = params["api_version"]
            why.append(f"api_version {params['api_version']}")
        key = params.get("api_key")
        ref = env_reference(key)
        if ref is not None:
            remote["api_key_env"] = ref
            why.append(f"key from {ref}")
        elif key is not None and str(key).strip():
            remote["api_key_env"] = self.secret_name(provider, str(key))
            why.append(f"its literal key moved to secrets.env as {remote['api_key_env']}")
        else:
            why.append("no api_key: LiteLLM reads the provider's usual variable; set it in secrets.env")
        tuning = self.dropped_params(params, set(REMOTE_KEYS))
        if tuning:
            why.append(f"not carried: {', '.join(tuning)} (llmctl has no per-deployment settings)")
        self.add_model(label, name, {"remote": remote})
        text = "; ".join([*([guessed] if guessed else []), *why])
        (self.report.guessed if guessed else self.report.mapped)(label, text, f"models.{name}")

    @staticmethod
    def remote_problem(provider: str, model: str, params: dict[str, Any]) -> str | None:
        """Why a provider's entry cannot be an llmctl remote model, or None."""
        from llmctl.secrets import env_file_writable  # noqa: PLC0415

        if not provider:
            return f"'{model}' has no provider prefix (openai/, anthropic/, ...)"
        if not PROVIDER.match(provider):
            return f"provider '{provider}' is not one llmctl can name (a-z, 0-9, _)"
        unknown = [k for k in params if k not in (*REMOTE_KEYS, *TUNING)]
        if unknown:
            return (
                f"it sets {', '.join(sorted(unknown))}, which llmctl's remote models do not carry "
                "(provider, model, api_base, api_version and a key's variable); without them the route "
                "would differ"
            )
        version = params.get("api_version")
        if version is not None and not (isinstance(version, str) and API_VERSION.match(version)):
            return "its api_version is not one llmctl can write (letters, digits, ._-)"
        key = params.get("api_key")
        ref = env_reference(key)
        if ref is not None and not ENV_NAME.match(ref):
            return f"os.environ/{ref} is not a variable name llmctl can use"
        if ref is None and key is not None and not (isinstance(key, str) and env_file_writable(key)):
            return "its literal api_key cannot be written to secrets.env (not kept)"
        return None

    # -- local ----------------------------------------------------------------------------------

    def local_kind(self, provider: str, port: int) -> tuple[str | None, str, bool]:
        """(kind, why, guessed)."""
        served = self.served(port)
        if served is not None and served.kind in OWNER_KINDS.values():
            return served.kind, f"the server on port {port} says it is {served.kind}", False
        by_provider = PROVIDER_KINDS.get(provider)
        by_port = PORT_KINDS.get(port)
        if by_port is not None and by_provider in (None, by_port):
            return by_port, f"port {port} is {by_port}'s", False
        if by_provider is not None:
            told = (
                f"port {port} is {by_port}'s, but " if by_port else f"port {port} is no backend's default; "
            )
            return by_provider, told + f"the provider prefix {provider}/ says {by_provider}", True
        return (
            None,
            f"port {port} is none of the backends' default ports and nothing there said what it is",
            True,
        )

    def local(
        self,
        label: str,
        name: str,
        provider: str,
        rest: str,
        address: tuple[str, int],
        params: dict[str, Any],
    ) -> None:
        host, port = address
        kind, kind_why, guessed = self.local_kind(provider, port)
        if kind is None:
            self.report.unmapped(label, kind_why)
            return
        if kind == "ollama":
            source, source_why, source_guessed = self.ollama_source(rest)
        elif kind == "vllm":
            source, source_why, source_guessed = self.vllm_source(rest, port)
        else:
            source, source_why, source_guessed = self.gguf_source(name, rest, port)
        if source is None:
            self.report.unmapped(label, f"{kind_why}; {source_why}")
            return
        backend = self.backend_for(kind, host, port)
        model: dict[str, Any] = {"backend": backend, "source": source}
        why = [kind_why, source_why]
        entry = self.backends[backend]
        if kind != "ollama":
            if "model" not in entry:
                entry["model"] = name
            else:
                guessed = True
                why.append(
                    f"{backend} serves {entry['model']}; {name} is a model it can switch to, routed only "
                    "once it serves it (the source sent both names to one server, which answers with "
                    "whatever it has loaded)"
                )
        key = params.get("api_key")
        if kind == "vllm" and env_reference(key) is None and str(key or "").strip().lower() not in NO_KEY:
            entry["api_key"] = True
            why.append("its key is not carried: llmctl starts vLLM with a key it generates (api_key: true)")
        elif kind == "vllm" and env_reference(key) is not None:
            entry["api_key"] = True
            why.append(
                f"os.environ/{env_reference(key)} not carried: llmctl generates vLLM's key (api_key: true)"
            )
        if provider == "ollama":
            why.append("routed as ollama_chat/ (Ollama's /api/chat), as llmctl routes Ollama")
        dropped = self.dropped_params(params, {"model", "api_base", "api_key"})
        if dropped:
            why.append(f"not carried: {', '.join(dropped)} (llmctl sets how it reaches its backends)")
        self.add_model(label, name, model)
        (self.report.guessed if guessed or source_guessed else self.report.mapped)(
            label, "; ".join(why), f"models.{name}"
        )

    def ollama_source(self, tag: str) -> tuple[str | None, str, bool]:
        pulled = self.detection.ollama_models
        if pulled is None:
            return tag, f"Ollama tag {tag} (no Ollama answered here to say whether it is pulled)", False
        names = set(pulled) | {p.removesuffix(":latest") for p in pulled}
        if tag in names or f"{tag}:latest" in names:
            return tag, f"Ollama tag {tag}, pulled here", False
        return tag, f"Ollama tag {tag}, not pulled here yet (ollama pull {tag})", False

    def vllm_source(self, rest: str, port: int) -> tuple[str | None, str, bool]:
        served = self.served(port)
        if served is not None and served.kind == "vllm" and served.models:
            # /v1/models' root (listed last) is the repo id or path it loaded.
            return served.models[-1], f"the vLLM on port {port} serves {served.models[-1]}", False
        if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", rest) or rest.startswith(("/", "~")):
            return rest, f"{rest}: vLLM serves a model under its repo id or path unless renamed", True
        return (
            None,
            f"'{rest}' is not a Hugging Face repo id or a path, and no vLLM answered on port {port}",
            True,
        )

    def gguf_source(self, name: str, rest: str, port: int) -> tuple[str | None, str, bool]:
        served = self.served(port)
        for model in served.models if served is not None else ():
            if model.lower().endswith(".gguf") and Path(model).is_absolute():
                return model, f"the server on port {port} serves {model}", False
        wanted = {_norm(name), _norm(rest)} - {""}
        matches = [
            g.path
            for g in self.detection.ggufs
            if any(w in _norm(g.path.stem) or _norm(g.path.stem) in w for w in wanted)
        ]
        if len(matches) == 1:
            return str(matches[0]), f"{matches[0]}: the one GGUF found here whose name matches", True
        found = f"{len(matches)} GGUF files here match" if matches else "no GGUF file found here matches"
        return (
            None,
            (
                f"the LiteLLM config does not say which GGUF file it serves, nothing answered on port {port} "
                f"to say, and {found} '{rest}'"
            ),
            True,
        )

    # -- environment_variables -------------------------------------------------------------

    def environment(self, variables: dict[str, Any]) -> None:
        """LiteLLM sets these in its environment at start; llmctl's gateway gets its
        environment from secrets.env, so they move there (values never shown)."""
        from llmctl.secrets import env_file_writable  # noqa: PLC0415

        for raw, value in variables.items():
            name, label = str(raw), f"environment_variables.{raw}"
            if not ENV_NAME.match(name):
                self.report.unmapped(label, "not a variable name")
            elif name == "LITELLM_MASTER_KEY" or name.startswith("LLMCTL_"):
                self.report.unmapped(label, "llmctl sets it for the gateway itself")
            elif isinstance(value, bool | dict | list) or value is None:
                self.report.unmapped(label, "not a string or a number")
            elif not env_file_writable(str(value)):
                self.report.unmapped(label, "its value holds a quote or a control character (not kept)")
            elif self.existing.get(name) == str(value) or self.secrets.get(name) == str(value):
                self.report.mapped(label, "secrets.env has it already", f"secrets.env {name}")
            elif name in self.existing or name in self.secrets:
                self.report.unmapped(label, f"secrets.env already sets {name} to another value (kept that)")
            else:
                self.secrets[name] = str(value)
                self.report.mapped(
                    label, "moved to secrets.env (mode 0600; its value is not shown)", f"secrets.env {name}"
                )

    def add_model(self, label: str, name: str, model: dict[str, Any]) -> None:
        self.models[name] = model
        self.sources[name] = label


def import_litellm(
    source: Path,
    data: dict[str, Any],
    detection: Detection,
    *,
    probe: Probe = no_probe,
    existing_secrets: Mapping[str, str] | None = None,
) -> Import:
    """The llmctl config for a LiteLLM config (`data`, from `read_source`), and the report."""
    from llmctl.init import from_litellm_settings as settings  # noqa: PLC0415

    report = Report()
    importer = _Importer(detection, probe, existing_secrets or {}, report)
    variables = data.get("environment_variables") or {}
    # Names the source uses are not given to the literal keys it moves.
    importer.referenced = _env_references(data) | {str(k) for k in variables}
    importer.environment(variables)
    for index, item in enumerate(data.get("model_list") or []):
        importer.entry(index, item)
    gateway = settings.import_settings(data, set(importer.models), report)
    litellm = detection.first("litellm")
    gateway_base: dict[str, Any] = {"command": str(litellm.path) if litellm else "litellm"}
    # The source sends each name straight to its server; on_demand would route through
    # llmctl's router instead (docs/on-demand.md): a choice left to the user.
    gateway_base["on_demand"] = False
    config: dict[str, Any] = {
        "version": 1,
        "backends": importer.backends,
        "models": importer.models,
        "gateway": gateway_base | gateway,
    }
    config = settings.drop_refused(config, report)
    needed = sorted(
        {
            m["remote"]["api_key_env"]
            for m in config["models"].values()
            if "remote" in m and "api_key_env" in m["remote"]
        }
        - set(importer.existing)
        - set(importer.secrets)
    )
    return Import(source, config, report.entries, importer.secrets, needed)


def _env_references(value: Any) -> set[str]:
    """Every NAME the source reads as os.environ/NAME."""
    if isinstance(value, dict):
        return set().union(*(_env_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_env_references(v) for v in value)) if value else set()
    ref = env_reference(value)
    return {ref} if ref else set()


def render_import(result: Import) -> str:
    """The config as YAML, with a header that says where it came from (no secret in it)."""
    import yaml  # noqa: PLC0415

    counts = result.counts()
    lines = [
        f"# Written by `llmctl init --from-litellm {result.source}`; edit freely.",
        f"# {counts['mapped']} mapped, {counts['guessed']} guessed, {counts['unmapped']} not carried "
        "(the report: llmctl init --from-litellm ... prints it again).",
    ]
    body = yaml.safe_dump(result.config, sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(lines) + "\n" + body


__all__ = ["Import", "Probe", "Served", "import_litellm", "no_probe", "probe_port", "render_import"]
