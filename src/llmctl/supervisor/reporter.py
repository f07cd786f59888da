"""How the engine says what it saw: an event about a backend, and the evidence for a failure
(the unit's state, and the known failure signature its journal shows, if any)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmctl.signatures import match_lines
from llmctl.supervisor import events
from llmctl.supervisor.tracker import Tracker
from llmctl.systemd import UnitState

JournalLines = Callable[[str, UnitState | None], list[str]]


class Reporter:
    def __init__(self, emit: Callable[[events.Event], None], journal: JournalLines) -> None:
        self.emit_event = emit
        self.journal = journal

    def emit(
        self,
        now: float,
        t: Tracker,
        event: str,
        reason: str,
        probe: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        self.emit_event(events.make(t.plan.name, event, reason, probe=probe, evidence=evidence, at=now))

    def why(
        self, t: Tracker, st: UnitState | None, what: str, *, current: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """`what`, plus the failure signature the journal shows, if any: in the current run's
        lines (`current`), else in the unit's last lines (a process that has exited)."""
        evidence: dict[str, Any] = {}
        if st is not None:
            evidence.update(
                active_state=st.active_state,
                sub_state=st.sub_state,
                result=st.result,
                n_restarts=st.n_restarts,
                exit_code=st.exec_main_code,
                exit_status=st.exec_main_status,
            )
        matches = match_lines(self.journal(t.plan.unit, st if current else None))
        if not matches:
            return what, evidence
        found = matches[0]
        evidence.update(signature=found.signature.id, runbook=found.signature.runbook, line=found.line)
        cannot = "" if found.signature.restart_helps else "; a restart cannot fix this"
        return f"{what}: {found.signature.summary}{cannot}", evidence
