"""Events: the bounded JSON-lines file, the journal's native protocol, --since."""

from __future__ import annotations

import json
import socket
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmctl import journal
from llmctl.supervisor import events
from llmctl.supervisor.store import BackendRecord, BreakerState, Restart, Store


def test_encode_plain_and_multiline_values() -> None:
    data = journal.encode({"MESSAGE": "a\nb", "LLMCTL_BACKEND": "native"})
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\nLLMCTL_BACKEND=native\n"
    with pytest.raises(ValueError, match="field name"):
        journal.encode({"lower": "x"})


def test_send_writes_one_datagram_with_structured_fields(tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        event = events.make("native", "restart", "liveness failed", probe="liveness", evidence={"n": 3})
        assert events.to_journal(event, socket_path=path)
        fields = dict(line.split("=", 1) for line in server.recv(65536).decode().splitlines())
    assert fields["LLMCTL_BACKEND"] == "native" and fields["LLMCTL_EVENT"] == "restart"
    assert fields["LLMCTL_PROBE"] == "liveness" and json.loads(fields["LLMCTL_EVIDENCE"]) == {"n": 3}
    assert fields["SYSLOG_IDENTIFIER"] == "llmctl-supervisor" and fields["PRIORITY"] == "4"
    assert "native: restart [liveness probe]: liveness failed" in fields["MESSAGE"]
    # No journald: not sent, no exception.
    assert not events.to_journal(event, socket_path=str(tmp_path / "absent"))


def test_file_is_bounded_and_trimmed_atomically_to_whole_lines(tmp_path: Path) -> None:
    for i in range(400):
        events.append(tmp_path, events.make(f"b{i % 3}", "probe-failed", "x" * 50), max_bytes=10_000)
    path = events.events_file(tmp_path)
    assert path.stat().st_size <= 10_000
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["event"] == "probe-failed" for line in lines)
    read = events.read(tmp_path)
    assert len(read) == len(lines) and read[-1].backend == "b0"  # the newest survive
    last = events.last_per_backend(tmp_path)
    assert set(last) == {"b0", "b1", "b2"}


def test_unreadable_lines_are_skipped(tmp_path: Path) -> None:
    events.append(tmp_path, events.make("a", "restart", "r"))
    with events.events_file(tmp_path).open("a") as handle:
        handle.write("not json\n")
    events.append(tmp_path, events.make("a", "reset", "r"))
    assert [e.event for e in events.read(tmp_path)] == ["restart", "reset"]


def test_parse_since() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert events.parse_since("10m", now) == now - timedelta(minutes=10)
    assert events.parse_since("2h ago", now) == now - timedelta(hours=2)
    assert events.parse_since("30", now) == now - timedelta(seconds=30)
    assert events.parse_since("2026-11-23T10:00+00:00", now) == datetime(2026, 11, 23, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a time"):
        events.parse_since("yesterday-ish", now)


def test_store_survives_restarts_and_sees_other_writers(tmp_path: Path) -> None:
    one = Store(tmp_path)

    def restart(record: BackendRecord) -> None:
        record.restarts.append(Restart(1.0, "liveness"))
        record.streak += 1
        record.last_restart = 1.0
        record.breaker = BreakerState(2.0, "3 restarts")

    one.update("native", restart)
    two = Store(tmp_path)  # a restarted supervisor, or llmctl reset
    assert two.get("native").streak == 1 and two.get("native").breaker == BreakerState(2.0, "3 restarts")

    def clear(record: BackendRecord) -> None:
        record.breaker = None

    two.update("native", clear)
    assert one.get("native").breaker is not None  # not re-read yet
    assert one.refresh() and one.get("native").breaker is None
    assert not one.refresh()
    (tmp_path / "supervisor.json").write_text("{broken")
    assert Store(tmp_path).get("native") == BackendRecord()


def test_the_newest_per_backend_parses_only_the_newest_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(50):
        events.append(tmp_path, events.make("old", "probe-failed", f"r{i}"))
    events.append(tmp_path, events.make("a", "restart", "first"))
    events.append(tmp_path, events.make("a", "recovered", "second"))
    events.append(tmp_path, events.make("b", "reset", "third"))
    parsed: list[str] = []
    loads = json.loads

    def counting(line: str) -> object:
        parsed.append(line)
        return loads(line)

    monkeypatch.setattr(json, "loads", counting)
    last = events.last_per_backend(tmp_path, {"a", "b"})
    assert {name: e.event for name, e in last.items()} == {"a": "recovered", "b": "reset"}
    assert len(parsed) == 2  # not the 52 older lines
    assert events.last_per_backend(tmp_path)["old"].reason == "r49"
