"""The client over an in-memory transport: what it sends and what it returns."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import cast

import pytest
from returns.pipeline import is_successful
from returns.result import Failure, Result

from cycleguard import (
    Action,
    Amount,
    ClientConfig,
    CyclesClient,
    Decision,
    OveragePolicy,
    Reservation,
    ReservationStatus,
    StandardMetrics,
    Subject,
)
from cycleguard.errors import (
    BudgetExceeded,
    ConnectionFailed,
    CyclesError,
    Denied,
    TransportError,
    ValidationFailed,
)
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.mock import MockTransport

pytestmark = pytest.mark.anyio

KEY = "cyc_live_TOPSECRET"
ACTION = Action("llm.completion", "openai:gpt-4o-mini")
GRANT = {
    "decision": "ALLOW",
    "reservation_id": "r-1",
    "reserved": {"unit": "TOKENS", "amount": 100},
    "expires_at_ms": 2_000,
    "remaining_ttl_ms": 1_000,
    "scope_path": "tenant:acme",
    "affected_scopes": ["tenant:acme"],
}
Handler = Callable[[HttpRequest], HttpResponse | TransportError]


def reply(status: int, body: object, *headers: tuple[str, str]) -> HttpResponse:
    return HttpResponse(status, headers, json.dumps(body).encode())


class Recorder:
    """A transport handler that records requests and answers from a script."""

    def __init__(self, *answers: HttpResponse | TransportError) -> None:
        self.requests: list[HttpRequest] = []
        self._answers = list(answers)

    def __call__(self, request: HttpRequest) -> HttpResponse | TransportError:
        self.requests.append(request)
        return self._answers.pop(0)

    @property
    def body(self) -> dict[str, object]:
        return cast("dict[str, object]", json.loads(self.requests[-1].body))


def client(recorder: Recorder, subject: Subject | None = None) -> CyclesClient:
    config = ClientConfig(base_url="http://cycles.test", api_key=KEY, subject=subject or Subject())
    return CyclesClient(config, transport=MockTransport(recorder))


def failure(result: Result[object, CyclesError]) -> CyclesError:
    assert not is_successful(result), result
    return result.failure()


async def test_create_reservation_sends_the_protocol_request() -> None:
    """Method, URL, headers and body are the protocol's; the grant comes back typed."""
    recorder = Recorder(reply(200, GRANT, ("X-Request-Id", "req-1")))
    async with client(recorder) as cycles:
        result = await cycles.create_reservation(
            subject=Subject(tenant="acme"),
            action=ACTION,
            estimate=Amount.tokens(100),
            ttl_ms=30_000,
        )
    reservation = result.unwrap()
    assert isinstance(reservation, Reservation)
    assert (reservation.reservation_id, reservation.remaining_ttl_ms) == ("r-1", 1_000)
    assert reservation.meta is not None
    assert reservation.meta.request_id == "req-1"
    request = recorder.requests[0]
    assert (request.method, request.url) == ("POST", "http://cycles.test/v1/reservations")
    assert request.header("X-Cycles-API-Key") == KEY
    assert request.header("Content-Type") == "application/json"
    assert (request.header("User-Agent") or "").startswith("cycleguard/")
    body = recorder.body
    assert request.header("X-Idempotency-Key") == body["idempotency_key"]
    assert body == {
        "idempotency_key": body["idempotency_key"],
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "openai:gpt-4o-mini"},
        "estimate": {"unit": "TOKENS", "amount": 100},
        "ttl_ms": 30_000,
    }


async def test_idempotency_keys_are_fresh_unless_given() -> None:
    """Each call gets a new key; a caller's key is used verbatim in body and header."""
    recorder = Recorder(reply(200, GRANT), reply(200, GRANT), reply(200, GRANT))
    async with client(recorder, Subject(tenant="acme")) as cycles:
        await cycles.create_reservation(action=ACTION, estimate=Amount.tokens(1))
        first = recorder.body["idempotency_key"]
        await cycles.create_reservation(action=ACTION, estimate=Amount.tokens(1))
        second = recorder.body["idempotency_key"]
        await cycles.create_reservation(
            action=ACTION, estimate=Amount.tokens(1), idempotency_key="mine-1"
        )
    assert first != second
    assert recorder.body["idempotency_key"] == "mine-1"
    assert recorder.requests[-1].header("X-Idempotency-Key") == "mine-1"


async def test_default_subject_is_merged_into_every_request() -> None:
    """Config subject fills unset fields; fields the call sets win."""
    defaults = Subject(tenant="acme", workspace="prod", dimensions={"team": "a"})
    recorder = Recorder(
        reply(200, GRANT),
        reply(200, {"decision": "ALLOW"}),
        reply(201, {"status": "APPLIED", "event_id": "e1"}),
        reply(200, {"balances": []}),
    )
    async with client(recorder, defaults) as cycles:
        await cycles.create_reservation(
            subject=Subject(agent="bot", workspace="dev"), action=ACTION, estimate=Amount.tokens(1)
        )
        assert recorder.body["subject"] == {
            "tenant": "acme",
            "workspace": "dev",
            "agent": "bot",
            "dimensions": {"team": "a"},
        }
        await cycles.decide(action=ACTION, estimate=Amount.tokens(1))
        assert recorder.body["subject"] == {
            "tenant": "acme",
            "workspace": "prod",
            "dimensions": {"team": "a"},
        }
        await cycles.create_event(action=ACTION, actual=Amount.tokens(1))
        assert recorder.body["subject"] == {
            "tenant": "acme",
            "workspace": "prod",
            "dimensions": {"team": "a"},
        }
        await cycles.get_balances()
    assert recorder.requests[-1].url == "http://cycles.test/v1/balances?tenant=acme&workspace=prod"


async def test_invalid_request_sends_nothing() -> None:
    """A broken rule is a ValidationFailed naming every field, and no I/O happens."""
    recorder = Recorder()
    async with client(recorder) as cycles:
        result = await cycles.create_reservation(
            subject=Subject(), action=ACTION, estimate=Amount.tokens(-1), ttl_ms=10
        )
        commit = await cycles.commit_reservation("", Amount.tokens(1))
        balances = await cycles.get_balances()
    error = failure(result)
    assert isinstance(error, ValidationFailed)
    assert [issue.field for issue in error.issues] == ["subject", "estimate.amount", "ttl_ms"]
    assert isinstance(failure(commit), ValidationFailed)
    assert isinstance(failure(balances), ValidationFailed)
    assert recorder.requests == []


async def test_commit_release_extend_paths_and_bodies() -> None:
    """Per-reservation calls hit their own path with the reservation id encoded."""
    recorder = Recorder(
        reply(200, {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 7}}),
        reply(200, {"status": "RELEASED", "released": {"unit": "TOKENS", "amount": 9}}),
        reply(200, {"status": "ACTIVE", "expires_at_ms": 9_000, "remaining_ttl_ms": 5_000}),
    )
    async with client(recorder) as cycles:
        committed = await cycles.commit_reservation(
            "r/1", Amount.tokens(7), metrics=StandardMetrics(tokens_input=3, tokens_output=4)
        )
        assert committed.unwrap().charged == Amount.tokens(7)
        assert recorder.requests[-1].url == "http://cycles.test/v1/reservations/r%2F1/commit"
        assert recorder.body["metrics"] == {"tokens_input": 3, "tokens_output": 4}
        released = await cycles.release_reservation("r-2", reason="tool failed")
        assert released.unwrap().released == Amount.tokens(9)
        assert recorder.body["reason"] == "tool failed"
        extended = await cycles.extend_reservation("r-3", 30_000)
        assert extended.unwrap().remaining_ttl_ms == 5_000
        assert recorder.body["extend_by_ms"] == 30_000
        assert recorder.requests[-1].url.endswith("/v1/reservations/r-3/extend")


async def test_server_errors_are_typed_values() -> None:
    """A 409 BUDGET_EXCEEDED envelope is a BudgetExceeded with the request id."""
    envelope = {"error": "BUDGET_EXCEEDED", "message": "no budget", "request_id": "req-7"}
    recorder = Recorder(reply(409, envelope))
    async with client(recorder, Subject(tenant="acme")) as cycles:
        result = await cycles.create_reservation(action=ACTION, estimate=Amount.tokens(10**6))
    assert failure(result) == BudgetExceeded(status=409, message="no budget", request_id="req-7")


async def test_deny_on_decide_and_dry_run_is_denied() -> None:
    """decision=DENY is a Denied failure with the reason; ALLOW passes through."""
    deny = {
        "decision": "DENY",
        "reason_code": "DEBT_OUTSTANDING",
        "affected_scopes": ["tenant:acme"],
    }
    recorder = Recorder(
        reply(200, deny), reply(200, deny), reply(200, {"decision": "ALLOW", "affected_scopes": []})
    )
    async with client(recorder, Subject(tenant="acme")) as cycles:
        decided = await cycles.decide(action=ACTION, estimate=Amount.tokens(1))
        dry = await cycles.dry_run_reservation(action=ACTION, estimate=Amount.tokens(1))
        allowed = await cycles.dry_run_reservation(action=ACTION, estimate=Amount.tokens(1))
    assert failure(decided) == Denied(
        reason_code="DEBT_OUTSTANDING", affected_scopes=("tenant:acme",)
    )
    assert isinstance(failure(dry), Denied)
    assert recorder.body["dry_run"] is True
    assert allowed.unwrap().decision is Decision.ALLOW


async def test_transport_failures_pass_through() -> None:
    """A connection failure from the transport is the call's failure value."""
    recorder = Recorder(ConnectionFailed(message="refused"))
    async with client(recorder) as cycles:
        result = await cycles.get_reservation("r-1")
    assert failure(result) == ConnectionFailed(message="refused")


async def test_iterators_follow_cursors_and_stop_on_failure() -> None:
    """iter_reservations walks next_cursor; a failing page ends the walk with that failure."""
    row = {
        "reservation_id": "r",
        "status": "COMMITTED",
        "subject": {"tenant": "acme"},
        "action": {"kind": "k", "name": "n"},
        "reserved": {"unit": "TOKENS", "amount": 1},
        "created_at_ms": 1,
        "expires_at_ms": 2,
        "scope_path": "tenant:acme",
        "affected_scopes": ["tenant:acme"],
    }
    recorder = Recorder(
        reply(200, {"reservations": [row, row], "next_cursor": "c2", "has_more": True}),
        reply(200, {"reservations": [row], "has_more": False}),
        reply(200, {"reservations": [row], "next_cursor": "c9", "has_more": True}),
        ConnectionFailed(message="gone", request_sent=True),
    )
    async with client(recorder) as cycles:
        rows = [
            r async for r in cycles.iter_reservations(status=ReservationStatus.COMMITTED, limit=2)
        ]
        assert [r.unwrap().status for r in rows] == [ReservationStatus.COMMITTED] * 3
        assert recorder.requests[1].url.endswith("cursor=c2")
        assert "status=COMMITTED" in recorder.requests[0].url
        broken = [r async for r in cycles.iter_reservations()]
    assert is_successful(broken[0])
    assert broken[1] == Failure(ConnectionFailed(message="gone", request_sent=True))
    assert len(broken) == 2


async def test_event_with_overage_policy() -> None:
    """Events answer 201 and carry the policy and client time as given."""
    recorder = Recorder(
        reply(
            201, {"status": "APPLIED", "event_id": "e1", "charged": {"unit": "TOKENS", "amount": 3}}
        )
    )
    async with client(recorder, Subject(tenant="acme")) as cycles:
        result = await cycles.create_event(
            action=ACTION,
            actual=Amount.tokens(3),
            overage_policy=OveragePolicy.REJECT,
            client_time_ms=5,
        )
    assert result.unwrap().event_id == "e1"
    assert recorder.body["overage_policy"] == "REJECT"
    assert recorder.body["client_time_ms"] == 5


async def test_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    """Neither logs, reprs nor error values contain the API key."""
    caplog.set_level(logging.DEBUG, logger="cycleguard")
    envelope = {"error": "UNAUTHORIZED", "message": "bad key", "request_id": "r"}
    recorder = Recorder(reply(401, envelope), ConnectionFailed(message="x"))
    async with client(recorder, Subject(tenant="acme")) as cycles:
        first = await cycles.create_reservation(action=ACTION, estimate=Amount.tokens(1))
        second = await cycles.get_reservation("r-1")
        shown = [repr(cycles), repr(first), repr(second), repr(recorder.requests), caplog.text]
    assert all(KEY not in text for text in shown)
