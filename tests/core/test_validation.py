"""Client-side protocol rules: every broken rule is reported, nothing raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import attrs
import pytest

from cycleguard import (
    Action,
    Amount,
    CommitRequest,
    DecisionRequest,
    EventCreateRequest,
    JsonObject,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
    StandardMetrics,
    Subject,
)
from cycleguard._core._json import MAX_INT64
from cycleguard._core._validation import (
    list_limit_issues,
    reservation_id_issues,
    validate,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SUBJECT = Subject(tenant="acme")
ACTION = Action("llm.completion", "openai:gpt-4o-mini")


BASE = ReservationCreateRequest(
    idempotency_key="k", subject=SUBJECT, action=ACTION, estimate=Amount.tokens(10)
)


def fields_of(request: ReservationCreateRequest) -> list[str]:
    return [issue.field for issue in validate(request)]


def test_valid_request_has_no_issues() -> None:
    """A request inside every rule passes."""
    assert validate(BASE) == ()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: attrs.evolve(BASE, idempotency_key=""), "idempotency_key"),
        (lambda: attrs.evolve(BASE, idempotency_key="k" * 257), "idempotency_key"),
        (lambda: attrs.evolve(BASE, subject=Subject(dimensions={"a": "b"})), "subject"),
        (lambda: attrs.evolve(BASE, subject=Subject(tenant="a" * 129)), "subject.tenant"),
        (lambda: attrs.evolve(BASE, subject=Subject(tenant="acme corp")), "subject.tenant"),
        (lambda: attrs.evolve(BASE, subject=Subject(app="x/y")), "subject.app"),
        (
            lambda: attrs.evolve(BASE, subject=Subject(tenant="a", dimensions={"Run": "1"})),
            "subject.dimensions",
        ),
        (
            lambda: attrs.evolve(BASE, subject=Subject(tenant="a", dimensions={"run": "v" * 257})),
            "subject.dimensions.run",
        ),
        (
            lambda: attrs.evolve(
                BASE, subject=Subject(tenant="a", dimensions={f"d{i}": "v" for i in range(17)})
            ),
            "subject.dimensions",
        ),
        (lambda: attrs.evolve(BASE, action=Action("k" * 65, "n")), "action.kind"),
        (lambda: attrs.evolve(BASE, action=Action("k", "n" * 257)), "action.name"),
        (
            lambda: attrs.evolve(BASE, action=Action("k", "n", tags=tuple("t" for _ in range(11)))),
            "action.tags",
        ),
        (lambda: attrs.evolve(BASE, action=Action("k", "n", tags=("t" * 65,))), "action.tags[0]"),
        (lambda: attrs.evolve(BASE, estimate=Amount.tokens(-1)), "estimate.amount"),
        (lambda: attrs.evolve(BASE, estimate=Amount.tokens(MAX_INT64 + 1)), "estimate.amount"),
        (lambda: attrs.evolve(BASE, estimate=Amount.tokens(True)), "estimate.amount"),  # noqa: FBT003
        (lambda: attrs.evolve(BASE, ttl_ms=999), "ttl_ms"),
        (lambda: attrs.evolve(BASE, ttl_ms=86_400_001), "ttl_ms"),
        (lambda: attrs.evolve(BASE, grace_period_ms=-1), "grace_period_ms"),
        (lambda: attrs.evolve(BASE, grace_period_ms=60_001), "grace_period_ms"),
        (
            lambda: attrs.evolve(BASE, metadata=cast("JsonObject", {"x": object()})),
            "metadata",
        ),  # untyped caller
        (lambda: attrs.evolve(BASE, metadata={"x": float("nan")}), "metadata"),
    ],
)
def test_each_rule_is_reported(build: Callable[[], ReservationCreateRequest], field: str) -> None:
    """Each protocol limit names the field that broke it."""
    assert field in fields_of(build())


@pytest.mark.parametrize(("ttl", "grace"), [(1000, 0), (86_400_000, 60_000)])
def test_bounds_are_inclusive(ttl: int, grace: int) -> None:
    """The limits themselves are allowed."""
    assert validate(attrs.evolve(BASE, ttl_ms=ttl, grace_period_ms=grace)) == ()


def test_all_issues_are_reported_at_once() -> None:
    """A caller sees every problem in one go, not one per attempt."""
    assert fields_of(
        attrs.evolve(BASE, idempotency_key="", ttl_ms=1, estimate=Amount.tokens(-2))
    ) == [
        "idempotency_key",
        "estimate.amount",
        "ttl_ms",
    ]


@pytest.mark.parametrize(
    ("extend", "ok"), [(0, False), (1, True), (86_400_000, True), (86_400_001, False)]
)
def test_extend_range(extend: int, ok: bool) -> None:
    """extend_by_ms is 1 ms to 24 h."""
    assert (
        validate(ReservationExtendRequest(idempotency_key="k", extend_by_ms=extend)) == ()
    ) is ok


def test_commit_metrics_rules() -> None:
    """Metrics counts are non-negative and model_version is at most 128 characters."""
    bad = CommitRequest(
        idempotency_key="k",
        actual=Amount.tokens(1),
        metrics=StandardMetrics(tokens_input=-1, latency_ms=-5, model_version="m" * 129),
    )
    assert [issue.field for issue in validate(bad)] == [
        "metrics.tokens_input",
        "metrics.latency_ms",
        "metrics.model_version",
    ]


def test_release_reason_length() -> None:
    """A release reason is at most 256 characters."""
    assert validate(ReleaseRequest(idempotency_key="k", reason="r" * 256)) == ()
    assert validate(ReleaseRequest(idempotency_key="k", reason="r" * 257))[0].field == "reason"


def test_event_and_decision_rules() -> None:
    """Events and decisions check their subject, action and amount too."""
    event = EventCreateRequest(
        idempotency_key="k",
        subject=Subject(),
        action=ACTION,
        actual=Amount.tokens(1),
        client_time_ms=-1,
    )
    assert [issue.field for issue in validate(event)] == ["subject", "client_time_ms"]
    decision = DecisionRequest(
        idempotency_key="k", subject=SUBJECT, action=ACTION, estimate=Amount.tokens(-1)
    )
    assert [issue.field for issue in validate(decision)] == ["estimate.amount"]


def test_reservation_id_and_limit() -> None:
    """Path ids are 1..128 characters; page sizes 1..200."""
    assert reservation_id_issues("r" * 128) == ()
    assert reservation_id_issues("")[0].field == "reservation_id"
    assert reservation_id_issues("r" * 129)[0].field == "reservation_id"
    assert list_limit_issues(None) == list_limit_issues(200) == ()
    assert list_limit_issues(0)[0].field == "limit"
    assert list_limit_issues(201)[0].field == "limit"
