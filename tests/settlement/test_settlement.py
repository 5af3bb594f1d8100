"""Settling one known actual: same-key retries, event fallback, strict success, no release.

Every test runs on asyncio and trio against the fake server of ``_fake``, with a
real journal in ``tmp_path`` and a fake wall clock that sleeping advances.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import pytest

from cycleguard import Amount, CommitRequest, StandardMetrics, Subject
from cycleguard._core import _wire
from cycleguard._core._errors import (
    BudgetExceeded,
    IdempotencyMismatch,
    InternalError,
    InvalidResponse,
    ReservationFinalized,
    Unauthorized,
    UnknownServerError,
    UsageError,
    ValidationFailed,
)
from cycleguard._core._journal_format import event_fallback
from cycleguard._core._retry import Backoff
from cycleguard._journal import JournalConfig
from cycleguard._settlement import (
    Committed,
    Pending,
    RecoveredViaEvent,
    Rejected,
    Settlement,
    SettlementOutcome,
    SettlementPolicy,
)
from tests.settlement._fake import (
    ACTION,
    KEY,
    RID,
    SUBJECT,
    FakeCycles,
    Seen,
    answer,
    client_for,
    commit_request,
    die,
    envelope,
    expire,
    files_under,
    fresh_settlement,
    json_response,
    lost,
    rate_limited,
    read_record,
    record_path,
)

if TYPE_CHECKING:
    from pathlib import Path

    from cycleguard._core._http import HttpResponse

pytestmark = pytest.mark.anyio


async def settle(
    settlement: Settlement, request: CommitRequest | None = None, rid: str = RID
) -> SettlementOutcome:
    return await settlement.commit(
        reservation_id=rid, request=request or commit_request(), subject=SUBJECT, action=ACTION
    )


def assert_never_released(server: FakeCycles) -> None:
    assert server.of("release") == []


# CR-CORE-001 -----------------------------------------------------------------------------


async def test_lost_commit_response_is_retried_with_the_original_key(tmp_path: Path) -> None:
    """CR-CORE-001: the server applies the commit, the answer is lost; the retry reuses the
    key and body, the ledger charges once, nothing is released."""
    server = FakeCycles()
    server.script(lost)
    outcome = await settle(fresh_settlement(server, tmp_path))

    assert isinstance(outcome, Committed)
    assert outcome.response.charged == Amount.tokens(1250)
    commits = server.of("commit")
    assert server.kinds == ["commit", "commit"]  # [commit, commit_same_key]
    assert [seen.key for seen in commits] == [KEY, KEY]
    assert commits[0].body == commits[1].body == _wire.to_wire(commit_request())
    assert server.ledger == {("commit", KEY): 1250}  # settlement_occurs_at_most_once
    assert_never_released(server)
    assert not record_path(tmp_path).exists()
    assert len(server.clock.sleeps) == 1
    assert 0.4 <= server.clock.sleeps[0] <= 0.5  # first backoff step, jittered down


async def test_timeouts_and_5xx_are_retried_until_success(tmp_path: Path) -> None:
    """Transport errors and 5xx are ambiguous: same key, exponential backoff, then success."""
    server = FakeCycles()
    server.script(
        answer(envelope(500, "INTERNAL_ERROR")),
        answer(json_response(502, {"oops": True})),
        lost,
    )
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Committed)
    assert [seen.key for seen in server.of("commit")] == [KEY] * 4
    assert server.charged == 1250
    ceilings = [0.5, 1.0, 2.0]
    assert all(0.8 * c <= s <= c for s, c in zip(server.clock.sleeps, ceilings, strict=True))


async def test_exhausted_retries_keep_the_record_and_report_pending(tmp_path: Path) -> None:
    """After max_retries the record stays journaled (D5) with the last error; no release."""
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 10)
    policy = SettlementPolicy(max_retries=3)
    outcome = await settle(fresh_settlement(server, tmp_path, policy=policy))

    assert isinstance(outcome, Pending)
    assert outcome.journaled
    assert isinstance(outcome.error, InternalError)
    assert outcome.error.status == 503
    assert len(server.of("commit")) == 4
    assert {seen.key for seen in server.seen} == {KEY}
    assert read_record(record_path(tmp_path)).mode == "commit"
    assert_never_released(server)


async def test_waiting_never_exceeds_the_retry_budget(tmp_path: Path) -> None:
    """The inline retries stop when the next wait would overrun the budget."""
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 20)
    policy = SettlementPolicy(max_retries=50, retry_budget=5.0)
    outcome = await settle(fresh_settlement(server, tmp_path, policy=policy))
    assert isinstance(outcome, Pending)
    assert sum(server.clock.sleeps) <= 5.0
    assert record_path(tmp_path).exists()


# CR-CORE-002 -----------------------------------------------------------------------------

EXPIRED_ANSWERS = {
    "envelope": envelope(410, "RESERVATION_EXPIRED"),
    "bodyless 410": json_response(410, None),
    "410 proxy page": json_response(410, "<html>gone</html>"),
    "expired code on 409": envelope(409, "RESERVATION_EXPIRED"),
}


@pytest.mark.parametrize("expired", EXPIRED_ANSWERS.values(), ids=EXPIRED_ANSWERS.keys())
async def test_expired_commit_falls_back_to_an_event_with_the_same_key(
    tmp_path: Path, expired: HttpResponse
) -> None:
    """CR-CORE-002: a 410 (body optional) or RESERVATION_EXPIRED commit becomes a
    ``POST /v1/events`` with the original key, subject, action, actual, metrics, metadata."""
    server = FakeCycles()
    server.script(answer(expired))
    request = CommitRequest(
        idempotency_key=KEY,
        actual=Amount.tokens(1250),
        metrics=StandardMetrics(tokens_input=1000, tokens_output=250, latency_ms=812),
        metadata={"actual_source": "provider_usage"},
    )
    outcome = await settle(fresh_settlement(server, tmp_path), request)

    assert isinstance(outcome, RecoveredViaEvent)
    assert outcome.response.charged == Amount.tokens(1250)
    assert server.kinds == ["commit", "event"]  # [commit, event_same_key]
    (event,) = server.of("event")
    assert event.key == KEY
    assert event.body["idempotency_key"] == KEY
    # event_carries_original_subject_action_actual
    assert event.body["subject"] == {"tenant": "acme", "app": "chat"}
    assert event.body["action"] == {"kind": "llm.completion", "name": "openai:gpt-4o-mini"}
    assert event.body["actual"] == {"unit": "TOKENS", "amount": 1250}
    assert event.body["metrics"] == {"tokens_input": 1000, "tokens_output": 250, "latency_ms": 812}
    assert event.body["metadata"] == {
        "actual_source": "provider_usage",
        "recovered_reservation_id": RID,
        "recovery_reason": "commit_after_reservation_expired",
    }
    assert "overage_policy" not in event.body
    assert server.ledger == {("event", KEY): 1250}  # settlement_occurs_at_most_once
    assert_never_released(server)
    assert not record_path(tmp_path).exists()


async def test_event_mode_is_journaled_before_the_event_is_sent(tmp_path: Path) -> None:
    """D8: when the event arrives, the durable record already says ``mode: event``."""
    server = FakeCycles()
    server.script(expire)
    at_event: list[str] = []

    def check(seen: Seen) -> None:
        if seen.kind == "event":
            stored = read_record(record_path(tmp_path))
            assert stored.event_fallback_body == seen.body
            at_event.append(stored.mode)

    server.before.append(check)
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, RecoveredViaEvent)
    assert at_event == ["event"]


async def test_a_failing_event_is_retried_with_the_same_key(tmp_path: Path) -> None:
    """After the switch, transient event failures are retried like commits."""
    server = FakeCycles()
    server.script(expire, answer(envelope(503, "INTERNAL_ERROR")), lost)
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, RecoveredViaEvent)
    assert server.kinds == ["commit", "event", "event", "event"]
    assert {seen.key for seen in server.seen} == {KEY}
    assert server.ledger == {("event", KEY): 1250}


async def test_a_rejected_event_removes_the_record_without_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A known, non-retryable event rejection is final: record removed, spend recovery failed."""
    server = FakeCycles()
    server.script(expire, answer(envelope(409, "BUDGET_EXCEEDED")))
    with caplog.at_level(logging.ERROR, logger="cycleguard"):
        outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, BudgetExceeded)
    assert not record_path(tmp_path).exists()
    assert_never_released(server)
    assert "spend recovery failed" in caplog.text


# CR-CORE-004 -----------------------------------------------------------------------------

NONCONFORMANT = {
    "200 without charged": json_response(200, {"status": "COMMITTED"}),
    "202 with a valid body": json_response(
        202, {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 1250}}
    ),
    "200 with released null": json_response(
        200,
        {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 1250}, "released": None},
    ),
    "200 with a wrong status": json_response(
        200, {"status": "RELEASED", "charged": {"unit": "TOKENS", "amount": 1250}}
    ),
    "200 with a string amount": json_response(
        200, {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": "1250"}}
    ),
    "200 JSON null": json_response(200, None),
    "200 array": json_response(200, []),
    "204 empty": json_response(204, None),
}


@pytest.mark.parametrize("bad", NONCONFORMANT.values(), ids=NONCONFORMANT.keys())
async def test_nonconformant_success_is_ambiguous_and_keeps_the_key(
    tmp_path: Path, bad: HttpResponse
) -> None:
    """CR-CORE-004: only a schema-valid 200 settles a commit. Another 2xx or a malformed body
    is not success: the record stays and the retry carries the same key."""
    server = FakeCycles()
    server.script(answer(bad, apply_first=True))
    between: list[bool] = []

    def check(seen: Seen) -> None:
        if len(server.seen) == 2:  # the retry: the ambiguous answer removed nothing
            between.append(record_path(tmp_path).exists())

    server.before.append(check)
    outcome = await settle(fresh_settlement(server, tmp_path))

    assert between == [True]  # only_schema_valid_expected_status_is_terminal_success
    assert isinstance(outcome, Committed)
    assert server.kinds == ["commit", "commit"]  # [commit, commit_same_key]
    assert [seen.key for seen in server.seen] == [KEY, KEY]
    assert server.seen[0].body == server.seen[1].body
    assert server.charged == 1250
    assert not record_path(tmp_path).exists()


async def test_only_a_201_settles_an_event(tmp_path: Path) -> None:
    """An event answered 200 (or 201 with a malformed body) is ambiguous too."""
    server = FakeCycles()
    applied = {"status": "APPLIED", "event_id": "evt_1"}
    server.script(
        expire,
        answer(json_response(200, applied), apply_first=True),
        answer(json_response(201, {"status": "APPLIED"}), apply_first=True),
    )
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, RecoveredViaEvent)
    assert server.kinds == ["commit", "event", "event", "event"]
    assert server.charged == 1250


async def test_unknown_extra_response_fields_are_tolerated(tmp_path: Path) -> None:
    """Deliberate deviation from the peers: an additive field (the spec promises additive
    evolution) does not make a valid 200 ambiguous."""
    server = FakeCycles()
    body = {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 1250}, "new": 1}
    server.script(answer(json_response(200, body), apply_first=True))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Committed)
    assert server.kinds == ["commit"]


# Rate limits -----------------------------------------------------------------------------


async def test_429_persists_an_absolute_floor_and_waits_for_it(tmp_path: Path) -> None:
    """C2/D7: Retry-After becomes ``not_before_ms`` in the record; the retry comes no earlier."""
    server = FakeCycles()
    start = server.clock.now_ms
    server.script(rate_limited("2"))
    floors: list[int | None] = []

    def check(seen: Seen) -> None:
        if len(server.seen) == 2:
            floor = read_record(record_path(tmp_path)).not_before_ms
            floors.append(floor)
            assert floor is not None
            assert seen.at_ms >= floor

    server.before.append(check)
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Committed)
    assert floors == [start + 2000]
    assert server.clock.sleeps[0] >= 2.0
    assert [seen.key for seen in server.seen] == [KEY, KEY]


async def test_bodyless_429_is_still_a_rate_limit(tmp_path: Path) -> None:
    """Status before code: a 429 without an envelope is retried, never dropped."""
    server = FakeCycles()
    server.script(answer(json_response(429, None)))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Committed)
    assert server.kinds == ["commit", "commit"]


async def test_a_hostile_retry_after_is_clamped_to_an_hour(tmp_path: Path) -> None:
    """Retry-After: 10 days is honoured as one hour; beyond the budget it is left journaled."""
    server = FakeCycles()
    start = server.clock.now_ms
    server.script(rate_limited("864000"))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Pending)
    assert outcome.journaled
    assert read_record(record_path(tmp_path)).not_before_ms == start + 3_600_000
    assert server.clock.sleeps == []


# Stops and rejections ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_keeps_the_record_and_never_releases(
    tmp_path: Path, status: int
) -> None:
    """C5/D5: 401/403 after the action ran: keep the record, stop this run, no release."""
    server = FakeCycles()
    code = "UNAUTHORIZED" if status == 401 else "FORBIDDEN"
    server.script(answer(envelope(status, code)))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Pending)
    assert outcome.journaled
    assert server.kinds == ["commit"]
    assert record_path(tmp_path).exists()
    assert_never_released(server)


async def test_auth_stopped_records_wait_for_a_restart(tmp_path: Path) -> None:
    """The same process does not hammer a server that refused its credentials."""
    server = FakeCycles()
    server.script(answer(envelope(401, "UNAUTHORIZED")))
    settlement = fresh_settlement(server, tmp_path)
    outcome = await settle(settlement)
    assert isinstance(outcome, Pending)
    assert isinstance(outcome.error, Unauthorized)
    report = await settlement.sweep()
    assert report.outcomes == ()
    assert server.kinds == ["commit"]
    # A restart (with fixed credentials) settles it.
    restarted = await fresh_settlement(server, tmp_path).replay()
    assert isinstance(restarted.outcome(RID), Committed)


@pytest.mark.parametrize(
    ("unclassifiable", "error_type"),
    [
        (json_response(400, "<html>proxy says no</html>"), InvalidResponse),
        (envelope(422, "SOMETHING_NEW"), UnknownServerError),
        (envelope(400, "INTERNAL_ERROR"), InternalError),
    ],
    ids=["codeless 400", "unknown code", "retryable code on a 4xx"],
)
async def test_unclassifiable_4xx_keeps_the_record(
    tmp_path: Path, unclassifiable: HttpResponse, error_type: type
) -> None:
    """Pitfall 5: only a known, non-retryable code is final; anything else is kept."""
    server = FakeCycles()
    server.script(answer(unclassifiable))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Pending)
    assert isinstance(outcome.error, error_type)
    assert server.kinds == ["commit"]
    assert record_path(tmp_path).exists()
    assert_never_released(server)


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (envelope(409, "RESERVATION_FINALIZED"), ReservationFinalized),
        (envelope(409, "IDEMPOTENCY_MISMATCH"), IdempotencyMismatch),
        (envelope(409, "BUDGET_EXCEEDED"), BudgetExceeded),
    ],
    ids=["finalized", "idempotency mismatch", "budget exceeded"],
)
async def test_understood_terminal_rejection_removes_the_record(
    tmp_path: Path, reply: HttpResponse, error_type: type
) -> None:
    """D6: a genuine, understood rejection is final: record removed, nothing released."""
    server = FakeCycles()
    server.script(answer(reply))
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, error_type)
    assert server.kinds == ["commit"]
    assert not record_path(tmp_path).exists()
    assert_never_released(server)


async def test_an_invalid_request_is_rejected_before_journal_or_network(tmp_path: Path) -> None:
    """Pitfall 20: an invalid actual is never journaled and never sent."""
    server = FakeCycles()
    bad = CommitRequest(idempotency_key=KEY, actual=Amount.tokens(-5))
    outcome = await settle(fresh_settlement(server, tmp_path), bad)
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, ValidationFailed)
    assert server.seen == []
    assert files_under(tmp_path) == []
    empty_rid = await settle(fresh_settlement(server, tmp_path), rid="")
    assert isinstance(empty_rid, Rejected)
    assert server.seen == []


async def test_a_second_concurrent_settlement_of_one_reservation_is_misuse(tmp_path: Path) -> None:
    """One reservation settles once at a time per Settlement."""
    server = FakeCycles()
    gate = anyio.Event()

    async def hold(seen: Seen, fake: FakeCycles) -> HttpResponse:
        await gate.wait()
        return fake.apply(seen)

    server.script(hold)
    settlement = fresh_settlement(server, tmp_path)
    async with anyio.create_task_group() as group:
        group.start_soon(settle, settlement)
        await server.wait_for(1)
        with pytest.raises(UsageError, match="already running"):
            await settle(settlement)
        gate.set()
    assert server.kinds == ["commit"]


# Journal first (D1) --------------------------------------------------------------------------


async def test_the_record_is_on_disk_before_the_first_request(tmp_path: Path) -> None:
    """D1: when the first commit arrives, its record already holds the exact body."""
    server = FakeCycles()
    observed: list[tuple[str, object, object]] = []

    def check(seen: Seen) -> None:
        stored = read_record(record_path(tmp_path))
        observed.append((stored.mode, stored.commit_body, stored.event_fallback_body))

    server.before.append(check)
    outcome = await settle(fresh_settlement(server, tmp_path))
    assert isinstance(outcome, Committed)
    event = _wire.to_wire(event_fallback(RID, commit_request(), SUBJECT, ACTION))
    assert observed == [("commit", server.seen[0].body, event)]


async def test_without_a_journal_settlement_still_happens(tmp_path: Path) -> None:
    """Journal off: nothing on disk, the settlement is made, Pending says it is not durable."""
    server = FakeCycles()
    server.script(*[answer(envelope(503, "INTERNAL_ERROR"))] * 3)
    settlement = fresh_settlement(server, None, policy=SettlementPolicy(max_retries=2))
    outcome = await settle(settlement)
    assert isinstance(outcome, Pending)
    assert not outcome.journaled
    assert settlement.journal is None
    # The in-memory record is still retried, e.g. by the shutdown drain.
    drained = await settlement.drain(timeout=5)
    assert drained.clean
    assert server.charged == 1250
    assert files_under(tmp_path) == []


async def test_an_unusable_event_fallback_does_not_block_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A subject no event could carry still commits; only an expiry is then unrecoverable."""
    server = FakeCycles()
    settlement = fresh_settlement(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cycleguard"):
        outcome = await settlement.commit(
            reservation_id=RID, request=commit_request(), subject=Subject(), action=ACTION
        )
    assert isinstance(outcome, Committed)
    assert "no usable event fallback" in caplog.text

    server.expired.add("rsv_2")
    expired = await settlement.commit(
        reservation_id="rsv_2", request=commit_request(key="k2"), subject=Subject(), action=ACTION
    )
    assert isinstance(expired, Pending)
    assert read_record(record_path(tmp_path, "rsv_2")).event_fallback_body is None
    assert server.kinds == ["commit", "commit"]


async def test_a_cancelled_settlement_is_not_forgotten(tmp_path: Path) -> None:
    """Journal off, the commit applied but the caller cancelled before the answer: the
    in-memory settlement is swept with the same key, and the ledger charges once."""
    server = FakeCycles()
    server.script(die)
    settlement = fresh_settlement(server, None)
    async with anyio.create_task_group() as group:
        group.start_soon(settle, settlement)
        await server.wait_for(1)
        group.cancel_scope.cancel()
    report = await settlement.sweep()
    assert isinstance(report.outcome(RID), Committed)
    assert server.kinds == ["commit", "commit"]
    assert {seen.key for seen in server.seen} == {KEY}
    assert server.charged == 1250


def test_policy_from_env() -> None:
    """The official SDKs' retry knobs are read; bad values are refused."""
    env = {
        "CYCLES_RETRY_MAX_ATTEMPTS": "3",
        "CYCLES_RETRY_INITIAL_DELAY": "0.25",
        "CYCLES_RETRY_MULTIPLIER": "3",
        "CYCLES_RETRY_MAX_DELAY": "10",
        "CYCLES_RETRY_FLUSH_TIMEOUT": "2.5",
    }
    policy = SettlementPolicy.from_env(environ=env)
    assert policy.max_retries == 3
    assert (policy.backoff.initial, policy.backoff.multiplier, policy.backoff.max_delay) == (
        0.25,
        3.0,
        10.0,
    )
    assert policy.drain_timeout == 2.5
    assert SettlementPolicy.from_env(environ={}) == SettlementPolicy()
    for bad in (
        {"CYCLES_RETRY_MAX_ATTEMPTS": "-1"},
        {"CYCLES_RETRY_INITIAL_DELAY": "soon"},
        {"CYCLES_RETRY_MULTIPLIER": "0.5"},
        {"CYCLES_RETRY_FLUSH_TIMEOUT": "inf"},
    ):
        with pytest.raises(UsageError):
            SettlementPolicy.from_env(environ=bad)


async def test_by_default_waits_run_on_the_event_loop_clock(tmp_path: Path) -> None:
    """Without injected clocks, backoff sleeps with ``anyio.sleep`` and the wall clock is real."""
    server = FakeCycles()
    server.script(lost)
    settlement = Settlement(
        client_for(server),
        journal=JournalConfig(directory=tmp_path),
        policy=SettlementPolicy(backoff=Backoff(initial=0.01, max_delay=0.02)),
    )
    before = anyio.current_time()
    outcome = await settle(settlement)
    assert isinstance(outcome, Committed)
    assert anyio.current_time() - before >= 0.008  # one jittered 10 ms backoff
    assert server.kinds == ["commit", "commit"]
    assert server.clock.sleeps == []
