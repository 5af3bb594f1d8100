"""The pure HTTP-edge helpers: trace ids, strict decoding and the idempotency digest."""

from __future__ import annotations

import json

import pytest

from cycleguard._core._models import ReservationCreateRequest, Unit
from cycleguard._core._wire import to_wire
from cycleguard.server import ledger
from cycleguard.server.http import Decoded, decode_request, trace_id_from
from cycleguard.server.records import Budget, Rejection
from cycleguard.server.runtime import canonical_digest, payload_hash

PARENT = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("traceparent", "flat", "expected"),
    [
        (f"00-{PARENT}-b7ad6b7169203331-01", None, PARENT),
        (f"00-{PARENT}-b7ad6b7169203331-01", "1" * 32, PARENT),
        ("01-" + PARENT + "-b7ad6b7169203331-01", "1" * 32, "1" * 32),
        (f"00-{PARENT}-{'0' * 16}-01", "2" * 32, "2" * 32),
        (None, "3" * 32, "3" * 32),
    ],
)
def test_trace_id_precedence(traceparent: str | None, flat: str | None, expected: str) -> None:
    assert trace_id_from(traceparent, flat) == expected


def test_generated_trace_ids_are_32_hex_and_never_zero() -> None:
    ids = {trace_id_from("junk", "0" * 32) for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 32 and int(i, 16) != 0 for i in ids)


BODY = {
    "idempotency_key": "k",
    "subject": {"tenant": "acme", "agent": "bot", "dimensions": {"run": "7"}},
    "action": {"kind": "llm.completion", "name": "m", "tags": ["a"]},
    "estimate": {"unit": "TOKENS", "amount": 5},
    "ttl_ms": 5_000,
    "metadata": {"z": 1, "a": [1, 2]},
}


def test_the_edge_digest_is_the_model_digest() -> None:
    decoded = decode_request(json.dumps(BODY).encode(), ReservationCreateRequest)
    assert isinstance(decoded, Decoded)
    assert decoded.digest == payload_hash(decoded.request)
    reordered = json.dumps(dict(reversed(list(BODY.items()))), indent=3).encode()
    again = decode_request(reordered, ReservationCreateRequest)
    assert isinstance(again, Decoded)
    assert again.digest == decoded.digest
    assert canonical_digest({**BODY, "dry_run": False}) == canonical_digest(BODY)
    assert canonical_digest({**BODY, "dry_run": True}) != canonical_digest(BODY)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b"", "empty"),
        (b"[1]", "expected a JSON object"),
        (b"{", "not JSON"),
        (json.dumps({**BODY, "metadata": {"n": float("nan")}}).encode(), "not JSON"),
        (json.dumps({**BODY, "metadata": {"s": "\ud800"}}).encode(), "not JSON"),
        (json.dumps({**BODY, "estimate": {"unit": "TOKENS", "amount": 2**70}}).encode(), "int64"),
        (json.dumps({**BODY, "x": 1}).encode(), "x"),
        (json.dumps({**BODY, "ttl_ms": 1}).encode(), "ttl_ms"),
    ],
)
def test_decoding_refuses_with_a_reason(raw: bytes, named: str) -> None:
    refused = decode_request(raw, ReservationCreateRequest)
    assert isinstance(refused, Rejection)
    assert (refused.status, refused.error) == (400, "INVALID_REQUEST")
    assert named in refused.message


@pytest.mark.parametrize("over_limit", [False, True])
def test_the_balance_fast_path_is_the_model_encoding(over_limit: bool) -> None:
    budget = Budget(
        scope="tenant:t/agent:a",
        unit=Unit.CREDITS,
        tenant_id="t",
        ledger_id="l",
        allocated=10,
        remaining=-2,
        spent=9,
        debt=3,
        overdraft_limit=5,
        is_over_limit=over_limit,
        created_at_ms=0,
    )
    assert json.loads(ledger.balance_json(budget)) == to_wire(ledger.to_balance(budget))
