"""An `ollama` program for the integration tests, where the real one is not installed.

`ollama serve`, configured as Ollama is (OLLAMA_HOST=HOST:PORT), served by
`tests.backends.standins.OllamaStandIn` (contract-tested against Ollama's documented
behaviour in tests/backends/test_ollama_contract.py) until SIGTERM. The models "on disk" are
FAKE_OLLAMA_MODELS (comma-separated names, e.g. "llama3:8b,mistral"), laid out as pulled in
OLLAMA_MODELS (manifest + a smoke GGUF blob, Ollama's layout) so that llmctl's memory estimate
reads them as it reads real ones. The tests install it as an executable with `install_fake_ollama`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from tests.integration.fake_programs import install_fake


def install_fake_ollama(directory: Path) -> Path:
    """An executable `ollama` in `directory` that runs this module with this interpreter."""
    return install_fake(directory, "ollama", "tests.integration.fake_ollama")


def pull(models_dir: Path, name: str) -> None:
    """Lay `name` out as `ollama pull` would: manifests/<registry>/<ns>/<model>/<tag>, blobs/."""
    from llmctl.smoke_model import write_smoke_model  # noqa: PLC0415

    model, _, tag = name.partition(":")
    blob_dir = models_dir / "blobs"
    blob_dir.mkdir(parents=True, exist_ok=True)
    staged = write_smoke_model(blob_dir / "incoming.gguf", name=name)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    staged.replace(blob_dir / f"sha256-{digest}")
    manifest = models_dir / "manifests" / "registry.ollama.ai" / "library" / model / (tag or "latest")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))


def main(argv: list[str]) -> int:
    from tests.backends.standins import OllamaStandIn, OnDisk  # noqa: PLC0415

    if argv != ["serve"]:
        print(f"fake ollama: only `serve` (got {argv})", file=sys.stderr)
        return 2
    _, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    models = [OnDisk(name) for name in os.environ.get("FAKE_OLLAMA_MODELS", "").split(",") if name]
    models_dir = os.environ.get("OLLAMA_MODELS")
    for model in models if models_dir else ():
        pull(Path(str(models_dir)), model.name)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with OllamaStandIn(models, port=int(port)):
        print(f"fake ollama: serving {[m.name for m in models]} on 127.0.0.1:{port}", flush=True)
        signal.sigwait(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
