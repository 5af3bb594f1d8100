"""Recovery across restarts, in process: replay, durable mode switch, persisted floors,
key rotation, concurrent workers, the sweeper and the bounded drain.

A restart is a fresh client and ``Settlement`` built from configuration only
(``fresh_settlement``): nothing but the journal directory crosses it (T2). A
process death is a settlement cancelled with a request in flight, without any
flush. The real-subprocess versions are in ``test_process_restart.py``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import attrs
import pytest

from cycleguard._core import _wire
from cycleguard._core._errors import UsageError
from cycleguard._core._journal_format import encode_record, fingerprint
from cycleguard._settlement import (
    Committed,
    DrainReport,
    Pending,
    RecoveredViaEvent,
    ReplayReport,
    Settlement,
    SettlementPolicy,
)
from tests.settlement._fake import (
    ACTION,
    BASE_URL,
    KEY,
    RID,
    START_MS,
    SUBJECT,
    FakeCycles,
    Seen,
    answer,
    commit_request,
    die,
    envelope,
    expire,
    files_under,
    fresh_settlement,
    make_record,
    rate_limited,
    read_record,
    record_path,
    seed,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cycleguard.transports.mock import MockOutcome

pytestmark = pytest.mark.anyio


async def commit_until_killed(settlement: Settlement, server: FakeCycles) -> None:
    """Run a first commit whose request never returns, then kill it (no flush, no drain)."""
    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(
                settlement.commit,
                reservation_id=RID,
                request=commit_request(),
                subject=SUBJECT,
                action=ACTION,
            )
        )
        await server.wait_for(1)
        group.cancel_scope.cancel()


# CR-DURABLE-001 --------------------------------------------------------------------------------


async def test_killed_first_commit_is_replayed_once_after_restart(tmp_path: Path) -> None:
    """CR-DURABLE-001 (in process): the record exists before the first commit leaves; the
    process dies with the commit applied but unanswered; a fresh instance replays the same
    key, the 200 removes the record, and the ledger charged once."""
    server = FakeCycles()
    at_first_commit: list[tuple[str, object]] = []

    def journal_first(seen: Seen) -> None:
        if len(server.seen) == 1:
            stored = read_record(record_path(tmp_path))
            at_first_commit.append((stored.mode, stored.commit_body))

    server.before.append(journal_first)
    server.script(die)
    await commit_until_killed(fresh_settlement(server, tmp_path), server)

    # journal_write_precedes_first_settlement_request
    assert at_first_commit == [("commit", server.seen[0].body)]
    # unresolved_record_survives_restart
    assert read_record(record_path(tmp_path)).commit_body == _wire.to_wire(commit_request())

    report = await fresh_settlement(server, tmp_path).replay()

    assert isinstance(report.outcome(RID), Committed)
    assert server.kinds == ["commit", "commit"]  # [commit, commit_same_key_after_restart]
    assert [seen.key for seen in server.seen] == [KEY, KEY]
    assert server.ledger == {("commit", KEY): 1250}  # settlement_occurs_at_most_once
    assert files_under(tmp_path) == []  # successful_replay_removes_record


async def test_replay_is_immediate_and_uses_the_stored_body(tmp_path: Path) -> None:
    """A seeded record is sent at once on replay, byte for byte as stored."""
    record = seed(tmp_path)
    server = FakeCycles()
    report = await fresh_settlement(server, tmp_path).replay()
    assert isinstance(report.outcome(RID), Committed)
    assert server.seen[0].body == record.commit_body
    assert server.clock.sleeps == []


# CR-DURABLE-002 --------------------------------------------------------------------------------


async def test_replayed_expired_commit_switches_durably_to_event_mode(tmp_path: Path) -> None:
    """CR-DURABLE-002: a replayed commit gets 410; the record says ``mode: event`` (with the
    body about to be sent) before the event leaves; the process dies; the next instance
    sends only the event, with the same key; the 201 removes the record; one charge."""
    seed(tmp_path)
    server = FakeCycles()
    at_event: list[tuple[str, object]] = []

    def mode_first(seen: Seen) -> None:
        if seen.kind == "event":
            stored = read_record(record_path(tmp_path))
            at_event.append((stored.mode, stored.event_fallback_body == seen.body))

    server.before.append(mode_first)
    server.script(expire, die)
    async with anyio.create_task_group() as group:
        group.start_soon(fresh_settlement(server, tmp_path).replay)
        await server.wait_for(2)
        group.cancel_scope.cancel()  # process_terminated_after_mode_switch

    assert at_event == [("event", True)]  # event_mode_is_persisted_before_event_attempt
    assert read_record(record_path(tmp_path)).mode == "event"

    report = await fresh_settlement(server, tmp_path).replay()

    assert isinstance(report.outcome(RID), RecoveredViaEvent)
    # [commit_same_key_after_restart, event_same_key_after_restart]: the restarted
    # instance sent no commit at all.
    assert server.kinds == ["commit", "event", "event"]
    assert {seen.key for seen in server.seen} == {KEY}
    assert server.ledger == {("event", KEY): 1250}  # settlement_occurs_at_most_once
    assert files_under(tmp_path) == []  # successful_event_removes_record


async def test_an_event_mode_record_from_a_previous_run_sends_only_the_event(
    tmp_path: Path,
) -> None:
    """A record already in event mode (even without a commit body) replays as an event."""
    seed(tmp_path, attrs.evolve(make_record(), mode="event", commit_body=None))
    server = FakeCycles()
    server.expired.add(RID)
    report = await fresh_settlement(server, tmp_path).replay()
    assert isinstance(report.outcome(RID), RecoveredViaEvent)
    assert server.kinds == ["event"]
    assert files_under(tmp_path) == []


async def test_expiry_without_an_event_body_keeps_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer record without an event body cannot fall back: kept, spend logged unrecorded."""
    seed(tmp_path, attrs.evolve(make_record(), event_fallback_body=None))
    server = FakeCycles()
    server.expired.add(RID)
    with caplog.at_level(logging.ERROR, logger="cycleguard"):
        report = await fresh_settlement(server, tmp_path).replay()
    assert isinstance(report.outcome(RID), Pending)
    assert server.kinds == ["commit"]
    assert record_path(tmp_path).exists()
    assert "spend is unrecorded" in caplog.text


# CR-DURABLE-003 --------------------------------------------------------------------------------


async def test_rate_limit_floor_survives_restart(tmp_path: Path) -> None:
    """CR-DURABLE-003: a 429 with Retry-After persists ``not_before_ms``; the process dies
    while waiting; a restart before the floor sends nothing until the floor, then the
    same-key commit succeeds and the record is removed."""
    server = FakeCycles()
    start = server.clock.now_ms
    server.script(rate_limited("5"))
    waiting = anyio.Event()

    async def wait_until_killed(seconds: float) -> None:
        waiting.set()
        await anyio.sleep_forever()

    first = fresh_settlement(server, tmp_path, sleep=wait_until_killed)
    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(
                first.commit,
                reservation_id=RID,
                request=commit_request(),
                subject=SUBJECT,
                action=ACTION,
            )
        )
        await waiting.wait()  # the 429 was answered; the process waits for the floor
        group.cancel_scope.cancel()  # process_terminated_after_journal_write
    floor = read_record(record_path(tmp_path)).not_before_ms
    assert floor == start + 5000
    # The process is gone; it comes back 2 s later, before the floor.
    server.clock.advance(2.0)
    arrivals: list[int] = []
    server.before.append(lambda seen: arrivals.append(seen.at_ms))

    report = await fresh_settlement(server, tmp_path).replay()

    assert isinstance(report.outcome(RID), Committed)
    assert server.kinds == ["commit", "commit"]  # [commit, commit_same_key_after_retry_after]
    assert [seen.key for seen in server.seen] == [KEY, KEY]
    assert arrivals == [floor]  # no_retry_before_persisted_not_before (not a ms earlier)
    assert 2.9 <= sum(server.clock.sleeps) <= 3.0
    assert files_under(tmp_path) == []  # successful_replay_removes_record


async def test_a_far_floor_is_deferred_to_a_later_pass(tmp_path: Path) -> None:
    """A floor beyond this pass's budget is not waited for; a later sweep settles it."""
    floor = START_MS + 600_000
    seed(tmp_path, attrs.evolve(make_record(), not_before_ms=floor))
    server = FakeCycles()
    settlement = fresh_settlement(server, tmp_path)
    report = await settlement.replay()
    assert report.deferred == (RID,)
    assert server.seen == []
    early = await settlement.sweep()
    assert early.deferred == (RID,)
    server.clock.advance(600)
    swept = await settlement.sweep()
    assert isinstance(swept.outcome(RID), Committed)
    assert [seen.at_ms for seen in server.seen] == [floor]


async def test_a_corrupt_far_future_floor_parks_a_record_for_an_hour_at_most(
    tmp_path: Path,
) -> None:
    """Pitfall 8: a floor years ahead is treated as one hour."""
    years_ahead = START_MS + 10 * 365 * 86_400_000
    seed(tmp_path, attrs.evolve(make_record(), not_before_ms=years_ahead))
    server = FakeCycles()
    settlement = fresh_settlement(server, tmp_path, policy=SettlementPolicy(retry_budget=3600.0))
    report = await settlement.replay()
    assert isinstance(report.outcome(RID), Committed)
    assert sum(server.clock.sleeps) <= 3600.0


# CR-DURABLE-004 --------------------------------------------------------------------------------


async def test_tenant_journal_survives_api_key_rotation(tmp_path: Path) -> None:
    """CR-DURABLE-004: a record written with tenant ``acme`` and ``old-key`` is found and
    settled by a fresh instance with tenant ``acme`` and ``rotated-key``; the old key is
    stored nowhere."""
    server = FakeCycles()
    server.script(die)
    old = fresh_settlement(server, tmp_path, api_key="old-key", tenant="acme")
    await commit_until_killed(old, server)

    (stored,) = files_under(tmp_path)
    # The identity is the tenant: any key of tenant acme names the same directory.
    assert stored.parent.name == fingerprint(BASE_URL, "rotated-key", "acme")
    # old_api_key_is_not_stored
    assert "old-key" not in str(stored)
    assert b"old-key" not in stored.read_bytes()

    rotated = fresh_settlement(server, tmp_path, api_key="rotated-key", tenant="acme")
    report = await rotated.replay()

    assert isinstance(report.outcome(RID), Committed)  # new_tenant_credential_finds_record
    assert server.kinds == ["commit", "commit"]  # [commit_same_key_after_restart]
    assert [seen.key for seen in server.seen] == [KEY, KEY]
    assert server.charged == 1250
    assert files_under(tmp_path) == []


async def test_without_a_tenant_rotation_orphans_the_record(tmp_path: Path) -> None:
    """Documented limit: keyed by the API key, a rotated key looks in another directory."""
    seed(tmp_path, api_key="old-key")
    server = FakeCycles()
    report = await fresh_settlement(server, tmp_path, api_key="rotated-key").replay()
    assert report.outcomes == ()
    assert server.seen == []


# CR-DURABLE-005 (replay side) ------------------------------------------------------------------


async def test_replay_quarantines_and_still_settles_valid_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CR-DURABLE-005: corrupt and unsupported files are quarantined and reported; the valid
    record is replayed (expected requests: none for the bad files)."""
    seed(tmp_path)
    directory = record_path(tmp_path).parent
    (directory / "broken.json").write_bytes(b"{not json")
    future = encode_record(make_record(reservation_id="rsv_future"))
    (directory / "future.json").write_bytes(future.replace(b'"version": 1', b'"version": 2'))
    (directory / "array.json").write_bytes(b"[]")
    server = FakeCycles()
    with caplog.at_level(logging.WARNING, logger="cycleguard"):
        report = await fresh_settlement(server, tmp_path).replay()
    assert sorted(report.quarantined) == sorted(
        str(directory / name) for name in ("array.corrupt", "broken.corrupt", "future.corrupt")
    )
    assert isinstance(report.outcome(RID), Committed)
    assert server.kinds == ["commit"]
    assert sum("Quarantined" in r.getMessage() for r in caplog.records) == 3
    remaining = sorted(p.name for p in files_under(tmp_path))
    assert remaining == ["array.corrupt", "broken.corrupt", "future.corrupt"]


async def test_a_record_this_version_cannot_send_is_left_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid record whose body this version cannot reproduce exactly is kept, once logged."""
    body = {**_wire.to_wire(commit_request()), "future_field": True}
    seed(tmp_path, attrs.evolve(make_record(), commit_body=body))
    server = FakeCycles()
    settlement = fresh_settlement(server, tmp_path)
    with caplog.at_level(logging.ERROR, logger="cycleguard"):
        first = await settlement.replay()
        second = await settlement.replay()
    assert first.outcomes == second.outcomes == ()
    assert server.seen == []
    assert record_path(tmp_path).exists()
    logged = [r.getMessage() for r in caplog.records if "cannot be sent" in r.getMessage()]
    assert len(logged) == 1
    assert "future_field" in logged[0]


# CR-DURABLE-006 --------------------------------------------------------------------------------


async def test_concurrent_replay_by_independent_workers_is_exactly_once(tmp_path: Path) -> None:
    """CR-DURABLE-006 (in process): two independently built workers replay one record; both
    commits are in flight together (barrier of 2) with the same key; one charge; the record
    is gone afterwards. (The OS-process version is in ``test_process_restart.py``.)"""
    seed(tmp_path)
    server = FakeCycles()
    arrived = 0
    both = anyio.Event()

    async def barrier(seen: Seen, fake: FakeCycles) -> MockOutcome:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        with anyio.fail_after(5):
            await both.wait()
        return fake.apply(seen)

    server.script(barrier, barrier)
    reports: list[ReplayReport] = []

    async def worker() -> None:
        reports.append(await fresh_settlement(server, tmp_path).replay())

    async with anyio.create_task_group() as group:
        group.start_soon(worker)
        group.start_soon(worker)

    assert server.kinds == ["commit", "commit"]  # [concurrent_commit_same_key]
    assert [seen.key for seen in server.seen] == [KEY, KEY]
    assert all(isinstance(r.outcome(RID), Committed) for r in reports)
    assert server.ledger == {("commit", KEY): 1250}  # settlement_occurs_at_most_once
    assert files_under(tmp_path) == []  # terminal_record_is_removed


# The sweeper ----------------------------------------------------------------------------------


async def test_the_sweeper_settles_what_a_run_left_pending(tmp_path: Path) -> None:
    """A settlement left Pending (retries exhausted) is settled by the periodic sweep."""
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 3)
    settlement = fresh_settlement(server, tmp_path, policy=SettlementPolicy(max_retries=2))
    outcome = await settlement.commit(
        reservation_id=RID, request=commit_request(), subject=SUBJECT, action=ACTION
    )
    assert isinstance(outcome, Pending)
    async with anyio.create_task_group() as group:
        await group.start(partial(settlement.run_sweeper, interval=60.0))
        while record_path(tmp_path).exists():
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    assert server.kinds == ["commit"] * 4
    assert server.charged == 1250


async def test_the_sweeper_leaves_young_foreign_records_to_their_owner(tmp_path: Path) -> None:
    """A record another live process just wrote is not raced; an old orphan is taken over."""
    server = FakeCycles()
    now = server.clock.now_ms
    seed(tmp_path, make_record(reservation_id="rsv_young", now_ms=now - 1_000))
    seed(tmp_path, make_record(reservation_id="rsv_orphan", now_ms=now - 120_000))
    report = await fresh_settlement(server, tmp_path).sweep()
    assert [rid for rid, _ in report.outcomes] == ["rsv_orphan"]
    assert [seen.reservation_id for seen in server.seen] == ["rsv_orphan"]
    assert record_path(tmp_path, "rsv_young").exists()


async def test_sweep_interval_must_be_positive(tmp_path: Path) -> None:
    """A zero interval would spin."""
    with pytest.raises(UsageError, match="positive"):
        await fresh_settlement(FakeCycles(), tmp_path).run_sweeper(interval=0)


# The drain (D11) ------------------------------------------------------------------------------


async def test_drain_is_bounded_and_leaves_unresolved_records(tmp_path: Path) -> None:
    """D11: a settlement stuck in flight does not hold shutdown past the bound; its record
    stays for the next start and is reported."""
    server = FakeCycles()
    server.script(die)
    settlement = fresh_settlement(server, tmp_path)
    drained: DrainReport | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(
                settlement.commit,
                reservation_id=RID,
                request=commit_request(),
                subject=SUBJECT,
                action=ACTION,
            )
        )
        await server.wait_for(1)
        drained = await settlement.drain(timeout=0.05)
        group.cancel_scope.cancel()
    assert drained is not None
    assert drained.timed_out
    assert drained.unresolved == (RID,)
    assert not drained.clean
    assert record_path(tmp_path).exists()


async def test_drain_waits_for_in_flight_settlements(tmp_path: Path) -> None:
    """A settlement that finishes within the bound is waited for."""
    server = FakeCycles()
    gate = anyio.Event()

    async def slow(seen: Seen, fake: FakeCycles) -> MockOutcome:
        await gate.wait()
        return fake.apply(seen)

    server.script(slow)
    settlement = fresh_settlement(server, tmp_path)
    drained: DrainReport | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(
                settlement.commit,
                reservation_id=RID,
                request=commit_request(),
                subject=SUBJECT,
                action=ACTION,
            )
        )
        await server.wait_for(1)

        async def answer_soon() -> None:
            await anyio.sleep(0.01)
            gate.set()

        group.start_soon(answer_soon)
        drained = await settlement.drain(timeout=5)
    assert drained is not None
    assert drained.clean
    assert not drained.timed_out
    assert files_under(tmp_path) == []


async def test_closing_drains_pending_settlements(tmp_path: Path) -> None:
    """``async with Settlement(...)`` drains on exit: a pending record gets its last try."""
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 2)
    async with fresh_settlement(
        server, tmp_path, policy=SettlementPolicy(max_retries=1)
    ) as settlement:
        outcome = await settlement.commit(
            reservation_id=RID, request=commit_request(), subject=SUBJECT, action=ACTION
        )
        assert isinstance(outcome, Pending)
    assert server.charged == 1250
    assert files_under(tmp_path) == []


async def test_zero_timeout_drain_does_not_wait(tmp_path: Path) -> None:
    """``drain(0)`` reports what is open without settling it."""
    seed(tmp_path)
    server = FakeCycles()
    drained = await fresh_settlement(server, tmp_path).drain(timeout=0)
    assert drained.timed_out
    assert drained.unresolved == (RID,)
    assert server.seen == []
    assert record_path(tmp_path).exists()
