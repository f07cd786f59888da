"""Notice a backend changed behind the router's back (`llmctl up`, `rollback`, an edit by hand).

The router changes what a backend serves itself, and knows it. Anything else that does writes
the backend's unit file (its readiness gate names the model: `wait-ready --model ID`), so a
`stat` per request is enough to notice, and the model is read again only when the file
changed. A request is never sent to a backend whose unit now names another model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmctl.render.units import UNIT_SUBDIR, unit_name


@dataclass
class UnitWatch:
    config_home: Path
    seen: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # backend -> (mtime_ns, model)

    def model(self, backend: str) -> str | None:
        """The model the backend's installed unit serves (None: no unit, or none named)."""
        return self._read(backend)[1]

    def changed(self, backend: str) -> bool:
        """Whether the unit file changed since the last look (the first look is no change)."""
        before = self.seen.get(backend)
        now = self._read(backend)
        return before is not None and before != now

    def _read(self, backend: str) -> tuple[int, str | None]:
        path = self.config_home / UNIT_SUBDIR / unit_name(backend)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            self.seen[backend] = (0, None)
            return self.seen[backend]
        cached = self.seen.get(backend)
        if cached is not None and cached[0] == mtime:
            return cached
        self.seen[backend] = (mtime, self._installed_model(backend))
        return self.seen[backend]

    def _installed_model(self, backend: str) -> str | None:
        """Read only when the file changed: the units as installed describe themselves."""
        from llmctl.stack import stack_from_installed  # noqa: PLC0415

        unit = unit_name(backend)
        return next((u.model for u in stack_from_installed(self.config_home) if u.unit == unit), None)
