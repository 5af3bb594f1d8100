"""The Store protocol on the memory and SQLite stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, closing
from pathlib import Path

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cycleguard._core._models import (
    Action,
    Amount,
    Caps,
    OveragePolicy,
    StandardMetrics,
    Subject,
    Unit,
)
from cycleguard._core._state import LeaseState
from cycleguard.server.records import (
    RECORD_TYPES,
    RESERVATION_RETENTION_MS,
    ApiKeyRecord,
    Budget,
    EventRecord,
    IdempotencyRecord,
    KeyHash,
    PolicyRecord,
    ReservationRecord,
    StoredRecord,
    Tenant,
    TtlOverride,
)
from cycleguard.server.stores import Store, Tx, decode_record, encode_record, kind_of
from cycleguard.server.stores.memory import MemoryEngine, memory_store
from cycleguard.server.stores.sqlite import sqlite_store

StoreFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


def _memory(_: Path) -> AbstractAsyncContextManager[Store]:
    return memory_store()


def _sqlite(path: Path) -> AbstractAsyncContextManager[Store]:
    return sqlite_store(path / "cycles.db")


@pytest.fixture(params=[_memory, _sqlite], ids=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.param
    return factory


def budget(scope: str, tenant: str = "t", allocated: int = 10) -> Budget:
    return Budget(
        scope=scope,
        unit=Unit.TOKENS,
        tenant_id=tenant,
        ledger_id=f"l-{scope}",
        allocated=allocated,
        remaining=allocated,
        created_at_ms=0,
    )


def reservation(
    rid: str, expires_at_ms: int, state: LeaseState = LeaseState.ACTIVE
) -> ReservationRecord:
    return ReservationRecord(
        reservation_id=rid,
        tenant_id="t",
        state=state,
        subject=Subject(tenant="t", agent="a", dimensions={"run": "1"}),
        action=Action("llm.completion", "m", ("x",)),
        estimate=Amount.tokens(5),
        scope_path="tenant:t/agent:a",
        affected_scopes=("tenant:t", "tenant:t/agent:a"),
        budgeted_scopes=("tenant:t",),
        created_at_ms=0,
        expires_at_ms=expires_at_ms,
        grace_period_ms=100,
        overage_policy=OveragePolicy.REJECT,
        max_extensions=3,
        max_ttl_ms=60_000,
        idempotency_key="k",
        metadata={"nested": {"list": [1, "two", None]}},
        metrics=StandardMetrics(tokens_input=3, custom={"a": 1.5}),
        commit_response={"status": "COMMITTED"},
    )


def samples() -> list[StoredRecord]:
    return [
        Tenant(tenant_id="t", name="T", created_at_ms=1, metadata={"team": "x"}),
        ApiKeyRecord(
            key_id="key_1",
            tenant_id="t",
            key_prefix="cyc_live_abcde",
            secret_hash="ab" * 32,
            name="k",
            permissions=("balances:read",),
            created_at_ms=1,
            expires_at_ms=2,
        ),
        KeyHash(secret_hash="ab" * 32, key_id="key_1"),
        budget("tenant:t", allocated=2**63 - 1),
        reservation("r1", 1_000),
        IdempotencyRecord(
            tenant_id="t",
            endpoint="reserve",
            key="k",
            payload_hash="h",
            response={"decision": "ALLOW", "affected_scopes": ["tenant:t"]},
            status_code=200,
            created_at_ms=1,
            expires_at_ms=5,
            reservation_id="r1",
        ),
        PolicyRecord(
            policy_id="p",
            tenant_id="t",
            name="p",
            scope_pattern="tenant:t/agent:*",
            caps=Caps(max_tokens=5, tool_denylist=("shell",)),
            reservation_ttl_override=TtlOverride(max_extensions=1),
            created_at_ms=1,
        ),
        EventRecord(
            event_id="e",
            tenant_id="t",
            subject=Subject(tenant="t"),
            action=Action("a", "b"),
            actual=Amount.tokens(1),
            charged=Amount.tokens(1),
            overage_policy=OveragePolicy.ALLOW_IF_AVAILABLE,
            scope_path="tenant:t",
            budgeted_scopes=("tenant:t",),
            idempotency_key="k",
            created_at_ms=1,
        ),
    ]


def test_every_record_type_round_trips_through_the_codec() -> None:
    records = samples()
    assert {type(record) for record in records} == set(RECORD_TYPES)
    for record in records:
        assert decode_record(kind_of(record), encode_record(record)) == record


def test_decode_refuses_unknown_kinds_and_bad_bodies() -> None:
    with pytest.raises(ValueError, match="unknown record kind"):
        decode_record("Nope", "{}")
    with pytest.raises(ValueError, match="does not decode"):
        decode_record("Tenant", '{"tenant_id": 5}')


def _put_all(records: Sequence[StoredRecord]) -> Callable[[Tx], None]:
    def put(tx: Tx) -> None:
        for record in records:
            tx.put(record)

    return put


@pytest.mark.anyio
async def test_reads_see_own_writes_and_scans_follow_indexes(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    async with open_store(tmp_path) as store:
        await store.atomic(_put_all([budget("tenant:t"), budget("tenant:u", "u")]))

        def inside(tx: Tx) -> tuple[int, int, list[str]]:
            tx.put(budget("tenant:t/agent:a"))
            tx.delete(Budget, budget("tenant:u", "u").store_key)
            seen = tx.get(Budget, budget("tenant:t/agent:a").store_key)
            assert seen is not None
            return (
                len(tx.scan(Budget, "t")),
                len(tx.scan(Budget, "u")),
                [b.scope for b in tx.scan(Budget)],
            )

        assert await store.atomic(inside) == (2, 0, ["tenant:t", "tenant:t/agent:a"])
        assert await store.atomic(lambda tx: tx.get(Tenant, "t")) is None


@pytest.mark.anyio
async def test_a_function_that_raises_writes_nothing(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    async with open_store(tmp_path) as store:

        def failing(tx: Tx) -> None:
            tx.put(budget("tenant:t"))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await store.atomic(failing)
        assert await store.atomic(lambda tx: tx.scan(Budget)) == []


@pytest.mark.anyio
async def test_due_returns_records_in_due_order_up_to_the_limit(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    async with open_store(tmp_path) as store:
        await store.atomic(
            _put_all(
                [
                    reservation("late", 500),
                    reservation("early", 100),
                    reservation("done", 50, LeaseState.COMMITTED),
                    reservation("future", 5_000),
                ]
            )
        )
        due = await store.atomic(lambda tx: tx.due(ReservationRecord, 1_000, 10))
        assert [r.reservation_id for r in due] == ["early", "late"]
        first = await store.atomic(lambda tx: tx.due(ReservationRecord, 1_000, 1))
        assert [r.reservation_id for r in first] == ["early"]


def test_a_finished_reservation_is_due_for_removal_when_its_retention_ends() -> None:
    active = reservation("r", expires_at_ms=1_000)
    assert active.due_index == 1_100  # expiry after the 100 ms grace period
    committed = attrs.evolve(active, state=LeaseState.COMMITTED, finalized_at_ms=400)
    assert committed.due_index == 400 + RESERVATION_RETENTION_MS
    expired = attrs.evolve(active, state=LeaseState.EXPIRED)
    assert expired.due_index == 1_100 + RESERVATION_RETENTION_MS


_Step = tuple[int, int | None, int, int]
"""(reservation number, its due time or None to delete it, until_ms, limit)."""


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),
            st.none() | st.integers(0, 30),
            st.integers(0, 30),
            st.integers(1, 4),
        ),
        max_size=120,
    )
)
def test_due_agrees_with_a_full_scan_as_records_change(steps: list[_Step]) -> None:
    engine = MemoryEngine()
    for number, due_at, until_ms, limit in steps:
        key = f"r{number}"

        def step(tx: Tx, key: str = key, due_at: int | None = due_at) -> None:
            if due_at is None:
                tx.delete(ReservationRecord, key)
            else:
                tx.put(reservation(key, due_at - 100))  # due at expiry + 100 ms grace

        engine.run(step)

        def read(tx: Tx, until_ms: int = until_ms, limit: int = limit) -> tuple[list[str], ...]:
            due = [r.reservation_id for r in tx.due(ReservationRecord, until_ms, limit)]
            every = [(r.due_index, r.reservation_id) for r in tx.scan(ReservationRecord)]
            expected = sorted((d, k) for d, k in every if d is not None and d <= until_ms)
            return due, [k for _, k in expected[:limit]]

        got, expected = engine.run(read)[0]
        assert got == expected
        heap, due = engine.table(ReservationRecord).heap, engine.table(ReservationRecord).due
        assert not heap or due.get(heap[0][1]) == heap[0][0]  # the root sheds stale entries


@pytest.mark.anyio
async def test_sqlite_keeps_every_record_across_restarts(tmp_path: Path) -> None:
    records = samples()
    async with sqlite_store(tmp_path / "db") as store:
        await store.atomic(_put_all(records))
        await store.atomic(lambda tx: tx.delete(KeyHash, "ab" * 32))
    async with sqlite_store(tmp_path / "db") as store:
        for record in records:

            def read(tx: Tx, wanted: StoredRecord = record) -> StoredRecord | None:
                return tx.get(type(wanted), wanted.store_key)

            found = await store.atomic(read)
            assert found == (None if isinstance(record, KeyHash) else record)


@pytest.mark.anyio
async def test_sqlite_group_commits_concurrent_writers_in_order(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path / "db") as store:

        async def bump(index: int) -> None:
            def step(tx: Tx) -> None:
                current = tx.get(Budget, budget("tenant:t").store_key) or budget(
                    "tenant:t", allocated=0
                )
                tx.put(budget("tenant:t", allocated=current.allocated + 1))
                tx.put(budget(f"tenant:t/agent:a{index}"))

            await store.atomic(step)

        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(bump, index)
    async with sqlite_store(tmp_path / "db") as store:
        total = await store.atomic(lambda tx: tx.get(Budget, budget("tenant:t").store_key))
        assert total is not None
        assert total.allocated == 50
        assert len(await store.atomic(lambda tx: tx.scan(Budget, "t"))) == 51


@pytest.mark.anyio
async def test_sqlite_file_is_exclusive_to_one_server(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path / "db"):
        with pytest.raises(sqlite3.OperationalError):
            async with sqlite_store(tmp_path / "db"):
                pass


@pytest.mark.anyio
async def test_sqlite_refuses_an_unusable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises((sqlite3.Error, OSError)):
        async with sqlite_store(tmp_path / "file" / "db"):
            pass


@pytest.mark.anyio
async def test_sqlite_log_sheds_superseded_entries_and_keeps_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with sqlite_store(path) as store:
        for version in range(1, 40):
            versions = [budget("tenant:t", allocated=version), budget(f"tenant:t/agent:a{version}")]
            await store.atomic(_put_all(versions))
        await store.atomic(lambda tx: tx.delete(Budget, budget("tenant:t/agent:a1").store_key))
        await store.atomic(_put_all([budget("tenant:t/agent:a2", allocated=7)]))
    with closing(sqlite3.connect(path)) as raw:
        (entries,) = raw.execute("SELECT COUNT(*) FROM log").fetchone()
    assert entries == 39  # 78 writes, a rewrite and a delete later: only the live entries
    async with sqlite_store(path) as store:
        live = {b.scope: b.allocated for b in await store.atomic(lambda tx: tx.scan(Budget))}
    assert len(live) == 39
    assert (live["tenant:t"], live["tenant:t/agent:a2"]) == (39, 7)
    assert "tenant:t/agent:a1" not in live
