"""What every command needs: where things are, and the config loaded on demand."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.paths import Paths

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.render.units import RenderedStack, RenderOptions


@dataclass
class AppContext:
    config_option: str | None
    paths: Paths = field(default_factory=Paths.from_env)

    @property
    def config_path(self) -> Path:
        return self.paths.resolve_config_file(self.config_option, os.environ)

    def load(self, *, strict: bool = False) -> LoadedConfig:
        from llmctl.config.load import load_config  # noqa: PLC0415 - pydantic is slow to import

        return load_config(self.config_path, strict=strict)

    def render_options(self, loaded: LoadedConfig) -> RenderOptions:
        from llmctl.render.units import RenderOptions  # noqa: PLC0415

        return RenderOptions(
            config_path=loaded.path.resolve(),
            paths=self.paths,
            serving=tuple(sorted(self.serving(loaded).items())),
        )

    def serving(self, loaded: LoadedConfig) -> dict[str, str]:
        """Models the backends serve now where `switch` changed them (state.json)."""
        from llmctl.state import serving_now  # noqa: PLC0415

        return serving_now(loaded.config, self.paths.state_dir)

    def snapshot_keep(self) -> int:
        """`snapshots.keep` from the config once the schema has it; the default otherwise, and
        when the config does not load (a snapshot must still be possible with a broken config)."""
        from llmctl.errors import LlmctlError  # noqa: PLC0415
        from llmctl.snapshots import DEFAULT_KEEP  # noqa: PLC0415

        try:
            config = self.load().config
        except LlmctlError:
            return DEFAULT_KEEP
        keep = getattr(getattr(config, "snapshots", None), "keep", None)
        return keep if type(keep) is int and keep >= 1 else DEFAULT_KEEP

    def render(self, loaded: LoadedConfig) -> RenderedStack:
        from llmctl.render.units import render_stack  # noqa: PLC0415

        return render_stack(loaded.config, self.render_options(loaded))
