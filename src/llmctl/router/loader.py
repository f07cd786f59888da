"""The router's hands: loads and unloads through llmctl's own switch and systemd.

A load is `llmctl switch` run in the router's process (in a thread: it blocks on systemctl
and on the server's start): the same checks, memory plan, evictions, snapshot, intent record
and rollback as on the command line, so a load that fails leaves the old model serving and a
router killed mid-load is recovered by the next llmctl command. The gateway's routes do not
change (with on_demand they never depend on what is loaded), so no LiteLLM reload is in the
way. Snapshots taken for loads on demand are kept apart from the user's (llmctl.snapshots:
`load` snapshots are pruned among themselves).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import LlmctlError
from llmctl.router.scheduler import LoadFailed, LoadOutcome, Unavailable

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.paths import Paths
    from llmctl.planner import Plan
    from llmctl.render.units import RenderOptions

from llmctl.snapshots.store import LOAD_COMMAND


@dataclass
class SwitchLoader:
    """Loads with llmctl.switch, unloads with systemctl stop (after the scheduler drained)."""

    loaded: LoadedConfig
    paths: Paths
    config_path: Path  # the user's config: rendered units name it, as `llmctl up` wrote them
    inventory_file: Path | None = None  # described GPUs (tests); None: NVML
    on_message: Callable[[str], None] | None = None

    def current_config(self) -> LoadedConfig:
        """The config `llmctl up` applied last (read again when its text changed).

        The router starts with the applied config, and `up` changing only gateway settings
        (fallbacks, litellm_metrics) does not restart it. A load renders gateway.yaml: from the
        config it started with, it would undo what `up` changed and reload the gateway under
        the very request that waits for this load (drained, then cut: a 500).
        """
        from llmctl.config.load import load_config  # noqa: PLC0415
        from llmctl.state import applied_config_file  # noqa: PLC0415

        applied = applied_config_file(self.paths.state_dir)
        try:
            text = applied.read_text(encoding="utf-8")
        except OSError:
            return self.loaded
        if text != self.loaded.text:
            self.loaded = replace(load_config(applied), path=self.config_path)
        return self.loaded

    def render_options(self, serving: dict[str, str]) -> RenderOptions:
        from llmctl.render.units import RenderOptions  # noqa: PLC0415

        return RenderOptions(
            config_path=self.config_path, paths=self.paths, serving=tuple(sorted(serving.items()))
        )

    def _plan(self, backend: str, model: str, serving: dict[str, str]) -> Plan:
        from llmctl import gpu  # noqa: PLC0415
        from llmctl.planner.live import plan_for  # noqa: PLC0415

        return plan_for(
            self.loaded.config,
            model,
            serving=serving,
            gpu_source=gpu.source_for(self.inventory_file),
            backend=backend,
        )

    async def victims(self, backend: str, model: str) -> list[str]:
        return await asyncio.to_thread(self._victims, backend, model)

    def _victims(self, backend: str, model: str) -> list[str]:
        from llmctl.state import serving_now  # noqa: PLC0415

        plan = self._plan(backend, model, serving_now(self.loaded.config, self.paths.state_dir))
        if not plan.fits:
            from llmctl.switch import refuse_if_unfit  # noqa: PLC0415

            try:
                refuse_if_unfit(plan)
            except LlmctlError as exc:
                raise Unavailable(exc.message) from None
        return sorted({e.backend for e in plan.evictions if e.backend != backend})

    async def load(
        self, backend: str, model: str, *, evict: Sequence[str], restore: str | None
    ) -> LoadOutcome:
        return await asyncio.to_thread(self._load, backend, model, restore is not None)

    def _load(self, backend: str, model: str, explicit: bool) -> LoadOutcome:
        from llmctl import gpu  # noqa: PLC0415
        from llmctl.switch import switch  # noqa: PLC0415

        started = time.monotonic()
        try:
            result = switch(
                self.current_config(), self.paths, model, render_options=self.render_options, backend=backend,
                on_message=self.on_message,
                gpu_source=gpu.source_for(self.inventory_file),
                snapshot_command="switch" if explicit else LOAD_COMMAND,
            )  # fmt: skip
        except LlmctlError as exc:
            # switch rolled back: what served before serves again (its message says so).
            reason = "; ".join([exc.message, *exc.details])
            raise LoadFailed(reason, loaded=self._serving(backend)) from None
        return LoadOutcome(
            loaded=model,
            seconds=time.monotonic() - started,
            evicted=tuple(result.evicted),
            unchanged=result.unchanged,
        )

    def _serving(self, backend: str) -> str | None:
        """What the backend serves now, by asking it (after a rollback)."""
        from llmctl.backends import adapter_for  # noqa: PLC0415
        from llmctl.backends.base import Health, probe_client  # noqa: PLC0415
        from llmctl.kinds import Kind  # noqa: PLC0415
        from llmctl.stack import stack_from_installed  # noqa: PLC0415

        unit = next((u for u in stack_from_installed(self.paths.config_home) if u.name == backend), None)
        if unit is None or unit.model is None:
            return None
        with probe_client(5.0) as client:
            probe = adapter_for(Kind(unit.kind)).probe(client, unit.url, unit.model)
        return unit.model if probe.health is Health.OK else None

    async def unload(self, backend: str) -> None:
        await asyncio.to_thread(self._unload, backend)

    def _unload(self, backend: str) -> None:
        """Stop the unit (the scheduler drained it), then check its memory is back: its
        processes gone, and none of them still listed on a GPU (llmctl.vram)."""
        from llmctl import gpu, procs, systemd  # noqa: PLC0415
        from llmctl.render.units import unit_name  # noqa: PLC0415
        from llmctl.vram import wait_memory_back  # noqa: PLC0415

        unit = unit_name(backend)
        state = systemd.show([unit]).get(unit)
        pids = procs.cgroup_pids(state.control_group) if state is not None and state.running else []
        systemd.stop([unit])
        left = procs.alive(pids)
        if left:
            raise LlmctlError(f"{unit} stopped, but processes {left} are still alive")
        if self.loaded.config.backends[backend].gpus != []:
            wait_memory_back(gpu.source_for(self.inventory_file), pids, {}, what=f"after unloading {backend}")

    def with_config(self, loaded: LoadedConfig) -> SwitchLoader:
        return replace(self, loaded=loaded)
