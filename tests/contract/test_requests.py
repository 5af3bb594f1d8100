"""Every request the client encodes validates against the spec's schemas (schema-only extract)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest

from cycleguard import (
    Action,
    Amount,
    ClientConfig,
    CyclesClient,
    OveragePolicy,
    ReservationStatus,
    SortBy,
    SortDirection,
    StandardMetrics,
    Subject,
)
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.mock import MockTransport
from tests._spec import operations, parameter_errors, request_errors

pytestmark = pytest.mark.anyio

SUBJECT = Subject(tenant="acme", workspace="prod", agent="bot", dimensions={"run": "r1"})
ACTION = Action("llm.completion", "openai:gpt-4o-mini", tags=("prod",))
Call = Callable[[CyclesClient], Awaitable[object]]

CALLS: dict[str, Call] = {
    "decide": lambda c: c.decide(
        action=ACTION, estimate=Amount.tokens(5), subject=SUBJECT, metadata={"a": 1}
    ),
    "createReservation": lambda c: c.create_reservation(
        action=ACTION,
        estimate=Amount.usd_microcents(500_000),
        subject=SUBJECT,
        ttl_ms=30_000,
        grace_period_ms=2_000,
        overage_policy=OveragePolicy.ALLOW_WITH_OVERDRAFT,
        metadata={"step": 1},
    ),
    "createReservation (dry run)": lambda c: c.dry_run_reservation(
        action=ACTION, estimate=Amount.credits(1), subject=SUBJECT
    ),
    "commitReservation": lambda c: c.commit_reservation(
        "r-1",
        Amount.tokens(42),
        metrics=StandardMetrics(
            tokens_input=1, tokens_output=2, latency_ms=3, model_version="m", custom={"x": 1}
        ),
        metadata={"k": "v"},
    ),
    "releaseReservation": lambda c: c.release_reservation("r-1", reason="failed"),
    "extendReservation": lambda c: c.extend_reservation("r-1", 60_000, metadata={"beat": 1}),
    "createEvent": lambda c: c.create_event(
        action=ACTION,
        actual=Amount.risk_points(3),
        subject=SUBJECT,
        overage_policy=OveragePolicy.REJECT,
        metrics=StandardMetrics(tokens_output=3),
        client_time_ms=1_700_000_000_000,
        metadata={"why": "post-hoc"},
    ),
    "getReservation": lambda c: c.get_reservation("r-1"),
    "listReservations": lambda c: c.list_reservations(
        subject=Subject(tenant="acme"),
        status=ReservationStatus.ACTIVE,
        sort_by=SortBy.EXPIRES_AT_MS,
        sort_dir=SortDirection.ASC,
        include=("metadata", "committed_metadata"),
        limit=20,
        cursor="c1",
    ),
    "getBalances": lambda c: c.get_balances(
        subject=Subject(tenant="acme"), include_children=True, limit=10
    ),
}


def _operation_for(request: HttpRequest) -> str:
    """Find the spec operation whose method and path template match the request."""
    path = urlsplit(request.url).path
    for key, op in operations("runtime").items():
        template = re.sub(r"\{[^}]+\}", "[^/]+", str(op["path"]))
        if op["method"] == request.method and re.fullmatch(template, path):
            return str(key).split(":")[0]
    raise AssertionError(f"no operation for {request.method} {path}")


@pytest.mark.parametrize("name", list(CALLS))
async def test_encoded_request_matches_the_spec(name: str) -> None:
    """Body, headers and query parameters of each call are what the spec declares."""
    seen: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(599, (), b"")

    async with CyclesClient(
        ClientConfig(base_url="http://cycles.test", api_key="k"), transport=MockTransport(handler)
    ) as client:
        await CALLS[name](client)
    (request,) = seen
    operation = _operation_for(request)
    assert operation == name.split(" ")[0]
    if request.method == "POST":
        body = json.loads(request.body)
        assert request_errors("runtime", operation, "POST", body) == []
        assert request.header("X-Idempotency-Key") == body["idempotency_key"]
    else:
        assert request.body == b""
    for key, value in parse_qsl(urlsplit(request.url).query):
        assert parameter_errors("runtime", operation, request.method, key, value) == []
