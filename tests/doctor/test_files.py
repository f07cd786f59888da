"""llmctl doctor's file checks: the config, model files, free disk space, the gateway key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl import doctor
from llmctl.config.load import load_config
from llmctl.doctor import files
from tests.conftest import minimal_config, write_config
from tests.doctor.fakes import GIB, gguf, good_config

# --- config ---------------------------------------------------------------------------------------


def test_config_ok_warn_fail_and_missing(tmp_path: Path) -> None:
    check, loaded = doctor.check_config(good_config(tmp_path))
    assert (check.status, loaded is not None) == ("ok", True)
    assert "1 backends, 1 models" in check.reason

    check, loaded = doctor.check_config(write_config(tmp_path / "w.yaml", minimal_config()))
    assert check.status == "warn" and loaded is not None
    assert any("executable '/opt/llama/llama-server' not found" in d for d in check.details)

    check, loaded = doctor.check_config(write_config(tmp_path / "bad.yaml", minimal_config(version=2)))
    assert check.status == "fail" and loaded is None
    assert check.details and check.fix == "llmctl validate names each problem"

    check, loaded = doctor.check_config(tmp_path / "none.yaml")
    assert check.status == "fail" and loaded is None
    assert check.fix == "llmctl init writes a starter config"


# --- model files ------------------------------------------------------------------------------------------


def test_models(tmp_path: Path) -> None:
    config = minimal_config()
    config["models"]["tiny"]["source"] = str(gguf(tmp_path / "tiny.gguf", 2048))
    config["models"]["other"] = {"backend": "llama", "source": str(tmp_path / "missing.gguf")}
    config["models"]["ollama-tag"] = {"remote": {"provider": "openai", "model": "x"}}
    loaded = load_config(write_config(tmp_path / "c.yaml", config)).config
    check = doctor.check_models(loaded, {})
    assert check.status == "warn" and check.reason.endswith(": other")
    assert f"tiny: {tmp_path / 'tiny.gguf'} (2.0 KiB)" in check.details
    # Served now (state.json), the missing one fails.
    assert doctor.check_models(loaded, {"llama": "other"}).status == "fail"
    (tmp_path / "tiny.gguf").write_bytes(b"not a gguf at all")
    check = doctor.check_models(loaded, {})
    assert check.status == "fail" and "tiny" in check.reason
    assert any("no GGUF magic" in d for d in check.details)
    assert doctor.check_models(None, {}).status == "ok"


def test_model_directory_size(tmp_path: Path) -> None:
    (tmp_path / "hf" / "sub").mkdir(parents=True)
    (tmp_path / "hf" / "a.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "hf" / "sub" / "b").write_bytes(b"x" * 24)
    assert files._size(tmp_path / "hf") == 1024
    assert doctor.human_size(1024) == "1.0 KiB" and doctor.human_size(3 * GIB) == "3.0 GiB"


# --- disk, key ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "status"), [(50 * 1024**2, "fail"), (512 * 1024**2, "warn"), (5 * GIB, "ok")]
)
def test_disk(tmp_path: Path, free: int, status: str) -> None:
    seen: list[Path] = []

    def usage(path: Path) -> tuple[int, int, int]:
        seen.append(path)
        return (10 * GIB, 10 * GIB - free, free)

    check = doctor.check_disk(tmp_path / "not" / "yet" / "llmctl", usage)
    assert check.status == status
    assert seen == [tmp_path]  # the nearest directory that exists


def test_disk_unknown(tmp_path: Path) -> None:
    def broken(path: Path) -> tuple[int, int, int]:
        raise OSError(5, "Input/output error")

    assert doctor.check_disk(tmp_path, broken).status == "warn"


def test_gateway_key(tmp_path: Path) -> None:
    key = tmp_path / "gateway.env"
    assert doctor.check_gateway_key(key, enabled=False, installed=False).status == "ok"
    assert doctor.check_gateway_key(key, enabled=True, installed=False).status == "warn"
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert check.status == "fail" and "cannot start without it" in check.reason
    key.write_text("LITELLM_MASTER_KEY=sk-0123456789\n")
    key.chmod(0o644)
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert (check.status, check.fix) == ("fail", f"chmod 600 {key}")
    key.chmod(0o600)
    check = doctor.check_gateway_key(key, enabled=True, installed=True)
    assert check.status == "ok" and "(mode 0600)" in check.reason
    key.write_text("nothing useful\n")
    assert doctor.check_gateway_key(key, enabled=True, installed=True).status == "fail"


# --- backend key files ----------------------------------------------------------------------------


def test_backend_key_files_present_private_or_named(tmp_path: Path) -> None:
    from llmctl.paths import Paths  # noqa: PLC0415

    paths = Paths.from_env()
    assert files.check_backend_keys(paths, [], installed=set()).status == "ok"
    # Not installed yet: `up` will create it.
    check = files.check_backend_keys(paths, ["big"], installed=set())
    assert check.status == "warn" and "big:" in check.reason and check.fix == "llmctl up creates them"
    # Installed: its unit cannot start without it.
    assert files.check_backend_keys(paths, ["big"], installed={"big"}).status == "fail"
    key = paths.backend_key_file("big")
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("VLLM_API_KEY=x\n")
    key.chmod(0o644)
    check = files.check_backend_keys(paths, ["big"], installed={"big"})
    assert check.status == "fail" and "readable by others (mode 0644)" in check.reason
    assert check.fix is not None and "chmod 600" in check.fix
    key.chmod(0o600)
    check = files.check_backend_keys(paths, ["big"], installed={"big"})
    assert check.status == "ok" and check.details == (f"big: {key} (mode 0600)",)
    assert "VLLM_API_KEY=x" not in repr(check)  # never the key itself


# --- the Redis password (gateway.cache) -----------------------------------------------------------


def test_redis_password_files_present_private_and_in_agreement() -> None:
    from llmctl.paths import Paths  # noqa: PLC0415
    from llmctl.secrets import ensure_redis_password, read_redis_password  # noqa: PLC0415

    paths = Paths.from_env()
    check = files.check_redis_password(paths, installed=False)
    assert (check.status, check.fix) == ("warn", "llmctl up creates it")
    check = files.check_redis_password(paths, installed=True)
    assert check.status == "fail" and "cannot start" in check.reason
    ensure_redis_password(paths.redis_env_file, paths.redis_auth_file)
    password = read_redis_password(paths.redis_env_file)
    check = files.check_redis_password(paths, installed=True)
    assert check.status == "ok" and "(mode 0600)" in check.reason
    paths.redis_auth_file.chmod(0o644)
    check = files.check_redis_password(paths, installed=True)
    assert check.status == "fail" and check.fix == f"chmod 600 {paths.redis_auth_file}"
    paths.redis_auth_file.chmod(0o600)
    paths.redis_auth_file.write_text("requirepass something-else\n")
    check = files.check_redis_password(paths, installed=True)
    assert check.status == "fail" and "Redis and the gateway disagree" in check.reason
    assert password not in repr(check)  # never the password itself
