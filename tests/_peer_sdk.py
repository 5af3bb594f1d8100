"""Typed access to the official Python SDK's journal (``runcycles`` 0.5.3, a test dependency).

``runcycles`` ships no type information, so it is imported dynamically and only
the few functions the interoperability tests call are exposed, with their
types written down here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cycleguard._core._journal_format import JournalRecord


class _PeerRecord(Protocol):
    reservation_id: str
    base_url: str
    mode: str
    commit_body: dict[str, object] | None
    event_fallback_body: dict[str, object] | None
    recorded_at_ms: int
    not_before_ms: int | None

    def to_json(self) -> str: ...


class _PeerJournal(Protocol):
    def record(self, entry: _PeerRecord) -> None: ...

    def discard(self, reservation_id: str) -> None: ...

    def load_pending(self, base_url: str) -> list[_PeerRecord]: ...


_journal = importlib.import_module("runcycles.journal")
_Record = cast("Callable[..., _PeerRecord]", _journal.PendingCommitRecord)
_Journal = cast("Callable[[Path], _PeerJournal]", _journal.CommitJournal)
_from_json = cast("Callable[[str], _PeerRecord]", _journal.PendingCommitRecord.from_json)

auth_fingerprint = cast("Callable[[str, str, str | None], str]", _journal.auth_fingerprint)
"""The official SDK's identity directory name."""


def peer_json(record: JournalRecord) -> str:
    """What the official SDK writes for the same record."""
    return _Record(
        reservation_id=record.reservation_id,
        base_url=record.base_url,
        mode=record.mode,
        commit_body=None if record.commit_body is None else dict(record.commit_body),
        event_fallback_body=(
            None if record.event_fallback_body is None else dict(record.event_fallback_body)
        ),
        recorded_at_ms=record.recorded_at_ms,
        not_before_ms=record.not_before_ms,
    ).to_json()


def peer_parse(raw: str) -> _PeerRecord:
    """Parse a record file the way the official SDK does (raises when it refuses it)."""
    return _from_json(raw)


def peer_write(directory: Path, record: JournalRecord) -> None:
    """Have the official SDK journal ``record`` into ``directory`` (an identity directory)."""
    _Journal(directory).record(peer_parse(peer_json(record)))


def peer_load(directory: Path, base_url: str) -> list[str]:
    """The reservation ids the official SDK would replay from ``directory``."""
    return [entry.reservation_id for entry in _Journal(directory).load_pending(base_url)]
