"""The in-memory store, and the in-memory engine the SQLite store builds on.

Every record lives in a dict per record type with two indexes: owning tenant
and due time. A transaction reads through an overlay of its own writes; the
overlay is applied only when the function returns, so a function that raises
changes nothing. Functions run synchronously on the event loop, with no
``await`` between their reads and writes, which is what makes them atomic.

The due-time index is a heap, so the sweeper's look for what is due costs
what it finds, not the number of records: idempotency records are all due
(a day later), and the sweeper looks every second.
"""

from __future__ import annotations

import heapq
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NamedTuple, TypeVar, final

from cycleguard.server.records import StoredRecord

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Container

    from cycleguard.server.stores import Tx

__all__ = ("MemoryEngine", "MemoryStore", "Write", "memory_store")

R = TypeVar("R", bound=StoredRecord)
T = TypeVar("T")


class Write(NamedTuple):
    """One change a transaction made: ``record`` is ``None`` for a delete."""

    kind: type[StoredRecord]
    key: str
    record: StoredRecord | None


@final
class _Table:
    """The records of one type and their tenant and due-time indexes.

    ``due`` holds each due record's time; ``heap`` orders (time, key) entries
    for :meth:`due_entries`. An entry whose time is no longer the record's is
    stale: skipped, dropped when it reaches the root, and the heap is rebuilt
    once stale entries outnumber live ones.
    """

    __slots__ = ("by_tenant", "due", "heap", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, StoredRecord] = {}
        self.by_tenant: dict[str, set[str]] = {}
        self.due: dict[str, int] = {}
        self.heap: list[tuple[int, str]] = []

    def remove(self, key: str) -> None:
        """Drop the record under ``key`` (if any) and its index entries."""
        old = self.rows.pop(key, None)
        if old is None:
            return
        tenant = old.tenant_index
        if tenant is not None:
            keys = self.by_tenant.get(tenant)
            if keys is not None:
                keys.discard(key)
        self.due.pop(key, None)

    def add(self, key: str, record: StoredRecord) -> None:
        """Store ``record`` under ``key``, replacing and re-indexing."""
        tenant = record.tenant_index
        due = record.due_index
        old = self.rows.get(key)
        if old is not None and old.tenant_index == tenant and self.due.get(key) == due:
            # Most writes change a record in place (a budget's balances): same indexes.
            self.rows[key] = record
            return
        self.remove(key)
        self.rows[key] = record
        if tenant is not None:
            keys = self.by_tenant.get(tenant)
            if keys is None:
                keys = self.by_tenant[tenant] = set()
            keys.add(key)
        if due is not None:
            self.due[key] = due
            heapq.heappush(self.heap, (due, key))
            if len(self.heap) > 2 * len(self.due) + 64:
                self.heap = [(when, due_key) for due_key, when in self.due.items()]
                heapq.heapify(self.heap)

    def due_entries(self, until_ms: int, limit: int, skip: Container[str]) -> list[tuple[int, str]]:
        """Up to ``limit`` (time, key) of records due by ``until_ms``, earliest first,
        leaving out the keys in ``skip``. Walks the heap only where it is due."""
        heap, due = self.heap, self.due
        # An entry is stale once its record's due time changed (a reservation finished:
        # its expiry entry gives way to its retention one) or the record went. Stale
        # entries in the past would be walked on every sweep, so the root sheds them.
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        found: list[tuple[int, str]] = []
        taken: set[str] = set()
        frontier = [(heap[0], 0)] if heap and heap[0][0] <= until_ms else []
        while frontier and len(found) < limit:
            entry, index = heapq.heappop(frontier)
            when, key = entry
            if due.get(key) == when and key not in skip and key not in taken:
                taken.add(key)
                found.append(entry)
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap) and heap[child][0] <= until_ms:
                    heapq.heappush(frontier, (heap[child], child))
        return found


@final
class MemoryEngine:
    """Indexed records in memory, changed only through :meth:`run` or :meth:`load`."""

    def __init__(self) -> None:
        self.tables: dict[type[StoredRecord], _Table] = {}
        """The tables by record type (transactions read them directly)."""

    def table(self, kind: type[StoredRecord]) -> _Table:
        """The table of one record type (created on first use)."""
        table = self.tables.get(kind)
        if table is None:
            table = self.tables[kind] = _Table()
        return table

    def load(self, record: StoredRecord) -> None:
        """Insert a record read from durable storage."""
        self.table(type(record)).add(record.store_key, record)

    def size(self) -> int:
        """How many records are held, over every type."""
        return sum(len(table.rows) for table in self.tables.values())

    def run(self, fn: Callable[[Tx], T]) -> tuple[T, list[Write]]:
        """Run ``fn`` in a transaction; apply and return its writes if it returns."""
        tx = _EngineTx(self)
        result = fn(tx)
        writes = tx.writes()
        for write in writes:
            table = self.table(write.kind)
            if write.record is None:
                table.remove(write.key)
            else:
                table.add(write.key, write.record)
        return result, writes


_UNWRITTEN: object = object()
"""What a transaction's overlay holds for a record it has not written."""


@final
class _EngineTx:
    __slots__ = ("_engine", "_overlay")

    def __init__(self, engine: MemoryEngine) -> None:
        self._engine = engine
        self._overlay: dict[tuple[type[StoredRecord], str], StoredRecord | None] = {}

    def get(self, kind: type[R], key: str) -> R | None:
        record = self._overlay.get((kind, key), _UNWRITTEN)
        if record is _UNWRITTEN:
            table = self._engine.tables.get(kind)
            record = table.rows.get(key) if table is not None else None
        return record if isinstance(record, kind) else None

    def put(self, record: StoredRecord) -> None:
        self._overlay[(type(record), record.store_key)] = record

    def delete(self, kind: type[StoredRecord], key: str) -> None:
        self._overlay[(kind, key)] = None

    def _overlay_keys(self, kind: type[StoredRecord]) -> set[str]:
        return {key for (cls, key) in self._overlay if cls is kind}

    def scan(self, kind: type[R], tenant: str | None = None) -> list[R]:
        table = self._engine.table(kind)
        keys = set(table.rows) if tenant is None else set(table.by_tenant.get(tenant, ()))
        keys |= self._overlay_keys(kind)
        found: list[R] = []
        for key in sorted(keys):
            record = self.get(kind, key)
            if record is not None and (tenant is None or record.tenant_index == tenant):
                found.append(record)
        return found

    def due(self, kind: type[R], until_ms: int, limit: int) -> list[R]:
        table = self._engine.table(kind)
        written = self._overlay_keys(kind)
        found: list[tuple[int, str, R]] = []
        for key in [key for _, key in table.due_entries(until_ms, limit, written)] + [*written]:
            record = self.get(kind, key)
            if record is None:
                continue
            due = record.due_index
            if due is not None and due <= until_ms:
                found.append((due, key, record))
        found.sort(key=lambda row: (row[0], row[1]))
        return [record for _, _, record in found[:limit]]

    def writes(self) -> list[Write]:
        return [Write(kind, key, record) for (kind, key), record in self._overlay.items()]


@final
class MemoryStore:
    """A store that keeps everything in memory; nothing survives the process."""

    def __init__(self) -> None:
        self._engine = MemoryEngine()

    async def atomic(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` atomically (synchronously, on the calling event loop)."""
        result, _ = self._engine.run(fn)
        return result


@asynccontextmanager
async def memory_store() -> AsyncGenerator[MemoryStore]:
    """An empty in-memory store, for the lifetime of the ``async with`` block."""
    yield MemoryStore()
