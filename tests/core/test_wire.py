"""The codec: strict about types, tolerant of additions, silent about unset optionals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.pipeline import is_successful

from cycleguard import (
    Action,
    Amount,
    Balance,
    Caps,
    CommitRequest,
    CommitResponse,
    Decision,
    DecisionResponse,
    ErrorResponse,
    OveragePolicy,
    ReasonCode,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationStatus,
    ResponseMeta,
    StandardMetrics,
    Subject,
    Unit,
    UnknownReasonCode,
    UnknownReservationStatus,
)
from cycleguard._core import _wire
from cycleguard._core._json import MAX_INT64

T = TypeVar("T")
EXAMPLES = json.loads((Path(__file__).parents[1] / "spec" / "examples.json").read_text())


def decode_ok(body: object, cls: type[T]) -> T:
    result = _wire.decode(json.dumps(body).encode(), cls)
    assert is_successful(result), result
    return result.unwrap()


def decode_failure(body: object, cls: type[object]) -> str:
    result = _wire.decode(json.dumps(body).encode(), cls)
    assert not is_successful(result), result
    return result.failure()


DETAIL = {
    "reservation_id": "r1",
    "status": "ACTIVE",
    "subject": {"tenant": "acme"},
    "action": {"kind": "llm.completion", "name": "m"},
    "reserved": {"unit": "TOKENS", "amount": 10},
    "created_at_ms": 1,
    "expires_at_ms": 2,
    "scope_path": "tenant:acme",
    "affected_scopes": ["tenant:acme"],
}


def test_spec_examples_decode() -> None:
    """Every response example in the spec decodes to its model."""
    runtime = EXAMPLES["runtime"]
    created = decode_ok(runtime["ReservationCreateResponse"], ReservationCreateResponse)
    assert created.reservation_id == "rsv_a1b2c3d4"
    assert created.reserved == Amount.usd_microcents(500_000)
    decided = decode_ok(runtime["DecisionResponse"], DecisionResponse)
    assert decided.decision is Decision.ALLOW
    balance = decode_ok(runtime["Balance"], Balance)
    assert balance.remaining.amount == runtime["Balance"]["remaining"]["amount"]
    error = decode_ok(runtime["ErrorResponse"], ErrorResponse)
    assert error.error == "BUDGET_EXCEEDED"
    commit = decode_ok(runtime["CommitRequest"], CommitRequest)
    assert commit.metrics is not None
    assert commit.metrics.tokens_input == runtime["CommitRequest"]["metrics"]["tokens_input"]


def test_spec_request_examples_round_trip() -> None:
    """Decoding a spec request example and encoding it again gives the same JSON."""
    for name, cls in (
        ("ReservationCreateRequest", ReservationCreateRequest),
        ("CommitRequest", CommitRequest),
    ):
        body = EXAMPLES["runtime"][name]
        assert _wire.to_wire(decode_ok(body, cls)) == body


def test_unknown_response_fields_are_ignored() -> None:
    """A server that adds fields (the spec's additive evolution) does not break decoding."""
    body = {"decision": "ALLOW", "brand_new": {"x": 1}, "caps": {"max_tokens": 5, "later": True}}
    decided = decode_ok(body, DecisionResponse)
    assert decided.caps == Caps(max_tokens=5)


def test_strict_converter_rejects_unknown_fields() -> None:
    """The server-side reader refuses fields the spec does not define."""
    result = _wire.decode(b'{"decision":"ALLOW","x":1}', DecisionResponse, converter=_wire.STRICT)
    assert not is_successful(result)
    assert "x" in result.failure()


def test_unknown_reason_code_is_kept() -> None:
    """The open reason_code set maps unknown strings to UnknownReasonCode."""
    assert decode_ok(
        {"decision": "DENY", "reason_code": "NEW_RULE"}, DecisionResponse
    ).reason_code == (UnknownReasonCode("NEW_RULE"))
    assert (
        decode_ok(
            {"decision": "DENY", "reason_code": "DEBT_OUTSTANDING"}, DecisionResponse
        ).reason_code
        is ReasonCode.DEBT_OUTSTANDING
    )


def test_unknown_reservation_status_is_kept() -> None:
    """A future terminal status decodes to UnknownReservationStatus, not a failure."""
    detail = decode_ok({**DETAIL, "status": "ARCHIVED"}, ReservationDetail)
    assert detail.status == UnknownReservationStatus("ARCHIVED")
    assert decode_ok(DETAIL, ReservationDetail).status is ReservationStatus.ACTIVE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retry_after_ms", "5"),  # string for int
        ("retry_after_ms", True),  # bool for int
        ("retry_after_ms", 5.0),  # float for int
        ("affected_scopes", "tenant:a"),  # string for array
        ("affected_scopes", [1]),  # int for string
        ("reason_code", 7),  # int for string
        ("caps", []),  # array for object
    ],
)
def test_types_are_never_coerced(field: str, value: object) -> None:
    """No silent 1 -> "1", True -> 1 or 1.0 -> 1."""
    reason = decode_failure({"decision": "DENY", field: value}, DecisionResponse)
    assert field in reason


@pytest.mark.parametrize("field", ["reason_code", "caps", "retry_after_ms", "affected_scopes"])
def test_explicit_null_is_not_an_absent_field(field: str) -> None:
    """JSON null in an optional field breaks the schema; only omission means unset."""
    reason = decode_failure({"decision": "DENY", field: None}, DecisionResponse)
    assert f"null is not allowed; omit the field instead @ $.{field}" in reason


def test_closed_enums_reject_unknown_values() -> None:
    """Decision is a closed set: an unknown decision is an invalid answer."""
    assert "decision" in decode_failure({"decision": "MAYBE"}, DecisionResponse)


@pytest.mark.parametrize("amount", [-1, MAX_INT64 + 1])
def test_amounts_outside_int64_or_negative_fail(amount: int) -> None:
    """An Amount is 0..2**63-1; anything else is not a valid answer."""
    reason = decode_failure(
        {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": amount}}, CommitResponse
    )
    assert "charged" in reason


def test_amounts_are_exact_at_int64_max() -> None:
    """The largest amount survives a round trip exactly (no float on the way)."""
    body = {"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": MAX_INT64}}
    commit = decode_ok(body, CommitResponse)
    assert commit.charged.amount == MAX_INT64
    assert json.loads(_wire.encode(commit))["charged"]["amount"] == MAX_INT64


def test_signed_amount_may_be_negative() -> None:
    """Balance.remaining is a SignedAmount: overdraft makes it negative."""
    balance = decode_ok(
        {
            "scope": "tenant:a",
            "scope_path": "tenant:a",
            "remaining": {"unit": "TOKENS", "amount": -5},
        },
        Balance,
    )
    assert balance.remaining.amount == -5
    assert balance.is_over_limit is False


def test_literal_status_is_checked() -> None:
    """A commit answer whose status is not COMMITTED is not a valid commit answer."""
    assert "status" in decode_failure(
        {"status": "RELEASED", "charged": {"unit": "TOKENS", "amount": 1}}, CommitResponse
    )


def test_body_that_is_not_json_or_not_an_object() -> None:
    """Garbage and non-objects are failures with a reason, never exceptions."""
    assert not is_successful(_wire.decode(b"<html>", DecisionResponse))
    assert not is_successful(_wire.decode(b"[1,2]", DecisionResponse))
    assert not is_successful(_wire.decode(b"\xff\xfe", DecisionResponse))


def test_encoding_omits_unset_optionals() -> None:
    """Only set fields go on the wire; server defaults stay the server's."""
    request = ReservationCreateRequest(
        idempotency_key="k",
        subject=Subject(tenant="acme"),
        action=Action("llm.completion", "m"),
        estimate=Amount.tokens(5),
    )
    assert _wire.to_wire(request) == {
        "idempotency_key": "k",
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "m"},
        "estimate": {"unit": "TOKENS", "amount": 5},
    }


def test_encoding_keeps_set_fields_and_enums() -> None:
    """Set optionals, enums and tuples are written in wire form."""
    request = ReservationCreateRequest(
        idempotency_key="k",
        subject=Subject(agent="a", dimensions={"run": "r1"}),
        action=Action("tool.search", "web", tags=("x",)),
        estimate=Amount.credits(0),
        ttl_ms=1000,
        overage_policy=OveragePolicy.REJECT,
        dry_run=True,
        metadata={"n": [1, "two"]},
    )
    assert _wire.to_wire(request) == {
        "idempotency_key": "k",
        "subject": {"agent": "a", "dimensions": {"run": "r1"}},
        "action": {"kind": "tool.search", "name": "web", "tags": ["x"]},
        "estimate": {"unit": "CREDITS", "amount": 0},
        "ttl_ms": 1000,
        "overage_policy": "REJECT",
        "dry_run": True,
        "metadata": {"n": [1, "two"]},
    }


def test_response_meta_is_never_encoded() -> None:
    """meta describes the HTTP exchange and is not part of the body."""
    decided = attrs.evolve(DecisionResponse(decision=Decision.ALLOW), meta=ResponseMeta(status=200))
    assert _wire.to_wire(decided) == {"decision": "ALLOW"}


def test_unknown_reason_code_encodes_verbatim() -> None:
    """A server relaying an unknown reason code writes the original string."""
    decided = DecisionResponse(decision=Decision.DENY, reason_code=UnknownReasonCode("NEW"))
    assert _wire.to_wire(decided) == {"decision": "DENY", "reason_code": "NEW"}


amounts = st.builds(Amount, st.sampled_from(Unit), st.integers(0, MAX_INT64))
texts = st.text(min_size=1, max_size=20)
subjects = st.builds(
    Subject,
    tenant=st.none() | texts,
    agent=st.none() | texts,
    dimensions=st.none() | st.dictionaries(texts, texts, max_size=3),
)
metrics = st.builds(
    StandardMetrics,
    tokens_input=st.none() | st.integers(0, MAX_INT64),
    tokens_output=st.none() | st.integers(0, MAX_INT64),
    model_version=st.none() | texts,
)


@given(
    key=texts,
    subject=subjects,
    estimate=amounts,
    ttl=st.none() | st.integers(1000, 86_400_000),
    policy=st.none() | st.sampled_from(OveragePolicy),
)
def test_reservation_requests_round_trip(
    key: str, subject: Subject, estimate: Amount, ttl: int | None, policy: OveragePolicy | None
) -> None:
    """Encode then decode (strictly) gives back the same request."""
    request = ReservationCreateRequest(
        idempotency_key=key,
        subject=subject,
        action=Action("llm.completion", "m"),
        estimate=estimate,
        ttl_ms=ttl,
        overage_policy=policy,
    )
    decoded = _wire.decode(_wire.encode(request), ReservationCreateRequest, converter=_wire.STRICT)
    assert decoded.unwrap() == request


@given(key=texts, actual=amounts, metrics=st.none() | metrics)
def test_commit_requests_round_trip(
    key: str, actual: Amount, metrics: StandardMetrics | None
) -> None:
    """Commit bodies survive a round trip exactly."""
    request = CommitRequest(idempotency_key=key, actual=actual, metrics=metrics)
    decoded = _wire.decode(_wire.encode(request), CommitRequest, converter=_wire.STRICT)
    assert decoded.unwrap() == request
