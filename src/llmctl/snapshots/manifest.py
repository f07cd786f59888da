"""A snapshot's manifest (`manifest.json`) and its id: what a snapshot holds, checked on read.

The manifest is parsed strictly: a truncated file, a missing field, a wrong type or a file
key outside the few places llmctl writes is a `ManifestError` with a readable reason, which
the store turns into "corrupt: <reason>". Keys are checked here so that a damaged (or
hand-edited) manifest can never make a restore write outside $XDG_CONFIG_HOME's llmctl files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

# Where each kind of file lives inside a snapshot directory (and so its key in `files`).
CONFIG_KEY = "config/llmctl.yaml"
STATE_KEY = "state/state.json"
INSTALLED_PREFIX = "installed/"  # + the path relative to $XDG_CONFIG_HOME
GATEWAY_REL = "llmctl/gateway.yaml"
REDIS_CONF_REL = "llmctl/redis.conf"  # gateway.cache; its password is in files never copied
# The files llmctl renders beside the units, copied and restored like them.
GENERATED_RELS = (GATEWAY_REL, REDIS_CONF_REL)
UNIT_REL = re.compile(r"systemd/user/llmctl[A-Za-z0-9@._-]*")

# 20261123T153012Z-up, then 20261123T153012Z.2-switch for a second one in the same second.
ID_PATTERN = re.compile(
    r"(?P<ts>\d{8}T\d{6}Z)(?:\.(?P<n>[2-9]|[1-9]\d{1,3}))?-(?P<label>[a-z0-9][a-z0-9-]{0,39})"
)
_LABEL_CHARS = re.compile(r"[^a-z0-9]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")

T = TypeVar("T")


class ManifestError(ValueError):
    """The manifest cannot be trusted; the message says why (shown as "corrupt: ...")."""


def is_snapshot_id(name: str) -> bool:
    return ID_PATTERN.fullmatch(name) is not None


def order_key(snapshot_id: str) -> tuple[str, int]:
    """Sort key for ids: the timestamp, then the same-second counter (1 when absent)."""
    match = ID_PATTERN.fullmatch(snapshot_id)
    if match is None:
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")
    return match["ts"], int(match["n"] or 1)


def label_for(command: str) -> str:
    label = _LABEL_CHARS.sub("-", command.lower()).strip("-")[:40].strip("-")
    return label or "snapshot"


def next_id(existing: list[str], now: datetime, command: str) -> str:
    """A new id that sorts after every existing one, even if the clock went backwards."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    counter = 1
    latest = max((order_key(i) for i in existing), default=None)
    if latest is not None and latest[0] >= stamp:
        stamp, counter = latest[0], latest[1] + 1
    suffix = f".{counter}" if counter > 1 else ""
    return f"{stamp}{suffix}-{label_for(command)}"


def is_allowed_key(key: str) -> bool:
    if key in (CONFIG_KEY, STATE_KEY):
        return True
    if not key.startswith(INSTALLED_PREFIX):
        return False
    rel = key.removeprefix(INSTALLED_PREFIX)
    return rel in GENERATED_RELS or UNIT_REL.fullmatch(rel) is not None


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    mode: int  # permission bits of the original file, restored with it

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "mode": f"{self.mode:04o}"}


@dataclass(frozen=True)
class Manifest:
    id: str
    created: str  # ISO 8601, UTC
    reason: str
    command: str
    llmctl_version: str
    config_path: str | None  # where the config was read from (None: there was none)
    config_schema_version: int | None  # the config's `version:` (None: no config, or unreadable)
    config_sha256: str | None
    files: dict[str, FileEntry] = field(default_factory=dict)
    pinned: bool = False
    schema_version: int = MANIFEST_VERSION

    def with_pinned(self, pinned: bool) -> Manifest:
        return replace(self, pinned=pinned)

    def to_json(self) -> str:
        body = {
            "schema_version": self.schema_version,
            "id": self.id,
            "created": self.created,
            "reason": self.reason,
            "command": self.command,
            "llmctl_version": self.llmctl_version,
            "config_path": self.config_path,
            "config_schema_version": self.config_schema_version,
            "config_sha256": self.config_sha256,
            "pinned": self.pinned,
            "files": {key: entry.to_json() for key, entry in sorted(self.files.items())},
        }
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, expected_id: str) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{MANIFEST_NAME} is not valid JSON (truncated?): {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_NAME} is not a JSON object")
        version = data.get("schema_version")
        if type(version) is not int:
            raise ManifestError(f"{MANIFEST_NAME} has no schema_version")
        if version > MANIFEST_VERSION:
            raise ManifestError(
                f"{MANIFEST_NAME} has schema_version {version}, newer than this llmctl reads "
                f"({MANIFEST_VERSION}); it was written by llmctl {data.get('llmctl_version', '?')}"
            )
        if data.get("id") != expected_id:
            raise ManifestError(f"{MANIFEST_NAME} names id {data.get('id')!r}, not its directory's")
        files = data.get("files")
        if not isinstance(files, dict):
            raise ManifestError(f"{MANIFEST_NAME}: 'files' is not a mapping")
        manifest = cls(
            id=expected_id,
            created=_field(data, "created", str),
            reason=_field(data, "reason", str),
            command=_field(data, "command", str),
            llmctl_version=_field(data, "llmctl_version", str),
            config_path=_optional(data, "config_path", str),
            config_schema_version=_optional(data, "config_schema_version", int),
            config_sha256=_optional(data, "config_sha256", str),
            files={key: _entry(key, value) for key, value in files.items()},
            pinned=_field(data, "pinned", bool),
            schema_version=version,
        )
        if CONFIG_KEY in manifest.files and manifest.config_path is None:
            raise ManifestError(f"{MANIFEST_NAME}: holds {CONFIG_KEY} but no config_path")
        config_entry = manifest.files.get(CONFIG_KEY)
        if (config_entry.sha256 if config_entry else None) != manifest.config_sha256:
            raise ManifestError(f"{MANIFEST_NAME}: config_sha256 does not match {CONFIG_KEY}'s entry")
        return manifest


def _field(data: dict[str, Any], name: str, kind: type[T]) -> T:
    value = data.get(name)
    if type(value) is not kind:
        raise ManifestError(f"{MANIFEST_NAME}: {name!r} is missing or not a {kind.__name__}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type[T]) -> T | None:
    if data.get(name) is None:
        if name not in data:
            raise ManifestError(f"{MANIFEST_NAME}: {name!r} is missing")
        return None
    return _field(data, name, kind)


def _entry(key: str, value: Any) -> FileEntry:
    if not isinstance(key, str) or not is_allowed_key(key):
        raise ManifestError(f"{MANIFEST_NAME}: {key!r} is not a file llmctl snapshots")
    if not isinstance(value, dict):
        raise ManifestError(f"{MANIFEST_NAME}: the entry for {key} is not a mapping")
    sha, size, mode = value.get("sha256"), value.get("size"), value.get("mode")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ManifestError(f"{MANIFEST_NAME}: {key} has no valid sha256")
    if type(size) is not int or size < 0:
        raise ManifestError(f"{MANIFEST_NAME}: {key} has no valid size")
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ManifestError(f"{MANIFEST_NAME}: {key} has no valid mode")
    return FileEntry(sha256=sha, size=size, mode=int(mode, 8))
