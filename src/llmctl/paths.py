"""Where llmctl reads and writes, derived from the XDG base directories.

Everything is computed from an environment mapping passed in, so tests (and a private user
manager) can point llmctl anywhere without patching globals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path
    config_home: Path  # $XDG_CONFIG_HOME
    state_home: Path  # $XDG_STATE_HOME

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())

        def xdg(name: str, default: str) -> Path:
            value = env.get(name, "")
            # The spec says relative values are invalid and must be ignored.
            return Path(value) if value.startswith("/") else home / default

        return cls(
            home=home,
            config_home=xdg("XDG_CONFIG_HOME", ".config"),
            state_home=xdg("XDG_STATE_HOME", ".local/state"),
        )

    @property
    def default_config_file(self) -> Path:
        return self.config_home / "llmctl" / "llmctl.yaml"

    @property
    def llmctl_config_dir(self) -> Path:
        """Files llmctl generates beside the user's config: gateway.yaml, secrets."""
        return self.config_home / "llmctl"

    @property
    def unit_dir(self) -> Path:
        return self.config_home / "systemd" / "user"

    @property
    def state_dir(self) -> Path:
        return self.state_home / "llmctl"

    @property
    def gateway_file(self) -> Path:
        return self.llmctl_config_dir / "gateway.yaml"

    @property
    def gateway_env_file(self) -> Path:
        """The gateway's master key, mode 0600, read by the unit via EnvironmentFile=."""
        return self.llmctl_config_dir / "gateway.env"

    @property
    def secrets_env_file(self) -> Path:
        """The user's provider keys (api_key_env names), mode 0600, never copied anywhere."""
        return self.llmctl_config_dir / "secrets.env"

    @property
    def router_key_file(self) -> Path:
        """The key every request to llmctl's router carries, mode 0600; `up` writes it."""
        return self.llmctl_config_dir / "router.env"

    @property
    def backend_keys_dir(self) -> Path:
        """API keys llmctl generates for backends (`api_key: true`), one 0600 file each."""
        return self.llmctl_config_dir / "keys"

    def backend_key_file(self, backend: str) -> Path:
        """The backend's unit and the gateway's read it via EnvironmentFile=; never copied."""
        return self.backend_keys_dir / f"{backend}.env"

    @property
    def redis_conf_file(self) -> Path:
        """Redis's config (gateway.cache), rendered like gateway.yaml; it holds no secret."""
        return self.llmctl_config_dir / "redis.conf"

    @property
    def redis_env_file(self) -> Path:
        """The Redis password as LLMCTL_REDIS_PASSWORD=, mode 0600: the gateway's unit reads it."""
        return self.llmctl_config_dir / "redis.env"

    @property
    def redis_auth_file(self) -> Path:
        """The same password as `requirepass`, mode 0600: redis.conf includes it. Never copied."""
        return self.llmctl_config_dir / "redis-auth.conf"

    @property
    def redis_data_dir(self) -> Path:
        """Redis's working directory (its cache.rdb), mode 0700."""
        return self.state_dir / "redis"

    def resolve_config_file(self, explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
        """--config PATH, else $LLMCTL_CONFIG, else $XDG_CONFIG_HOME/llmctl/llmctl.yaml."""
        env = os.environ if env is None else env
        if explicit:
            return Path(explicit).expanduser()
        if env.get("LLMCTL_CONFIG"):
            return Path(env["LLMCTL_CONFIG"]).expanduser()
        return self.default_config_file
