"""The journal's cross-language format: names, identity, records, validation, quarantine."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.pipeline import is_successful

from cycleguard import Action, Amount, CommitRequest, StandardMetrics, Subject
from cycleguard._core import _wire
from cycleguard._core._journal_format import (
    JournalRecord,
    Keep,
    Migrate,
    Quarantine,
    commit_request,
    decode_record,
    encode_record,
    event_fallback,
    event_request,
    fingerprint,
    judge_file,
    legacy_filename,
    new_record,
    quarantine_name,
    standard_filename,
    temp_filename,
)
from tests._peer_sdk import auth_fingerprint, peer_json, peer_parse

if TYPE_CHECKING:
    from cycleguard._core._json import JsonObject

SUBJECT = Subject(tenant="acme", app="chat")
ACTION = Action("llm.completion", "openai:gpt-4o-mini")
COMMIT = CommitRequest(
    idempotency_key="5b0e9c1e-2d7a-4f0e-9a51-0c6f3f1d2b44",
    actual=Amount.usd_microcents(1250),
    metrics=StandardMetrics(latency_ms=812, tokens_input=10),
    metadata={"actual_source": "estimate"},
)


def record(**changes: object) -> JournalRecord:
    base = new_record(
        reservation_id="rsv_7f3a",
        base_url="http://localhost:7878",
        commit=COMMIT,
        event=event_fallback("rsv_7f3a", COMMIT, SUBJECT, ACTION),
        now_ms=1_785_950_000_000,
    )
    document = json.loads(encode_record(base))
    document.update(changes)
    return decode_record(json.dumps(document).encode()).unwrap()


# File names (D12, pitfall 9) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reservation_id", "name"),
    [
        ("rsv_abc-123", "v2-fe159e4dab8f7a05b609a0810be4800a22f3b08fc55a2762d2cded54d1484ec9.json"),
        ("rsv/../etc", "v2-08bf4457fdfa1fb11d02fb7f030f05c745a38058462cd1d158c40e644310d1de.json"),
        ("r🚀", "v2-34c5b33347a139e63c81ea72943cc15dd4c2087dc1eaa756a78f3c49974e0b87.json"),
    ],
)
def test_standard_filename_is_sha256_of_exact_utf8_identifier(
    reservation_id: str, name: str
) -> None:
    """The cross-SDK vectors: ``v2-`` + sha256 of the unchanged UTF-8 id (CR-DURABLE-007)."""
    assert standard_filename(reservation_id) == name
    assert name == f"v2-{hashlib.sha256(reservation_id.encode()).hexdigest()}.json"


def test_distinct_identifiers_never_share_a_journal_file() -> None:
    """``rsv/a`` and ``rsv_a`` shared the legacy name; their standard names differ."""
    assert legacy_filename("rsv/a") == legacy_filename("rsv_a") == "rsv_a.json"
    assert standard_filename("rsv/a") != standard_filename("rsv_a")
    # No normalisation: case, whitespace and Unicode forms are distinct ids.
    names = {standard_filename(i) for i in ("a", "A", " a", "a ", "é", "e\u0301")}
    assert len(names) == 6


@given(st.text(min_size=1, max_size=128))
def test_standard_names_are_safe_and_deterministic(reservation_id: str) -> None:
    """Any id, even with separators or astral characters, gives one flat, fixed-length name."""
    name = standard_filename(reservation_id)
    assert name == standard_filename(reservation_id)
    assert len(name) == len("v2-") + 64 + len(".json")
    assert "/" not in name
    assert "\\" not in name


def test_legacy_sanitiser_is_ascii_explicit() -> None:
    """Only ``[A-Za-z0-9_-]`` survives; every other code point becomes one ``_``."""
    assert legacy_filename("Az09_-") == "Az09_-.json"
    assert legacy_filename("é/ü.x🚀") == "____x_.json"


def test_quarantine_and_temp_names() -> None:
    """``X.json`` is quarantined as ``X.corrupt``; temp names are unique per writer."""
    assert quarantine_name("v2-ab.json") == "v2-ab.corrupt"
    assert quarantine_name("rsv_bad.json") == "rsv_bad.corrupt"
    assert temp_filename("v2-ab.json", 7, "deadbeef") == "v2-ab.json.7.deadbeef.tmp"
    assert not temp_filename("v2-ab.json", 7, "deadbeef").endswith(".json")


# Identity (D10, §4.2) ----------------------------------------------------------------------


def test_fingerprint_vectors_shared_by_every_sdk() -> None:
    """Key principal, tenant principal (any key), blank tenant = key principal."""
    assert fingerprint("http://localhost", "test-key") == "68c905017df7dbfc"
    assert fingerprint("http://localhost", "rotated-key", "acme") == "8baba538fb970da4"
    assert fingerprint("http://localhost", "old-key", "acme") == "8baba538fb970da4"
    assert fingerprint("http://localhost", "test-key", "   ") == "68c905017df7dbfc"
    assert fingerprint("http://localhost", "test-key", "") == "68c905017df7dbfc"


def test_fingerprint_uses_tenant_and_url_unchanged() -> None:
    """A padded tenant is used untrimmed; the base URL is not normalised."""
    assert fingerprint("http://localhost", "k", " acme") != fingerprint(
        "http://localhost", "k", "acme"
    )
    assert fingerprint("http://localhost/", "test-key") != fingerprint(
        "http://localhost", "test-key"
    )


@pytest.mark.parametrize(
    ("base_url", "api_key", "tenant"),
    [
        ("http://localhost", "test-key", None),
        ("https://c.example/x", "k2", "t-1"),
        ("u", "k", "  "),
    ],
)
def test_fingerprint_agrees_with_the_python_sdk(
    base_url: str, api_key: str, tenant: str | None
) -> None:
    """The official Python SDK derives the same directory name."""
    assert fingerprint(base_url, api_key, tenant) == auth_fingerprint(base_url, api_key, tenant)


def test_fingerprint_never_contains_the_key() -> None:
    """The directory name is 16 hex digits, never the secret."""
    name = fingerprint("http://localhost", "cyc_live_supersecret")
    assert len(name) == 16
    assert int(name, 16) >= 0
    assert "supersecret" not in name


# Building records ------------------------------------------------------------------------


def test_event_fallback_carries_original_subject_action_actual() -> None:
    """Same key, actual, metrics; metadata plus recovery markers; no overage policy."""
    event = event_fallback("rsv_7f3a", COMMIT, SUBJECT, ACTION)
    assert event.idempotency_key == COMMIT.idempotency_key
    assert event.subject == SUBJECT
    assert event.action == ACTION
    assert event.actual == COMMIT.actual
    assert event.metrics == COMMIT.metrics
    assert event.overage_policy is None
    assert event.client_time_ms is None
    assert dict(event.metadata or {}) == {
        "actual_source": "estimate",
        "recovered_reservation_id": "rsv_7f3a",
        "recovery_reason": "commit_after_reservation_expired",
    }
    assert dict(COMMIT.metadata or {}) == {"actual_source": "estimate"}
    assert "overage_policy" not in _wire.to_wire(event)


def test_new_record_holds_both_exact_wire_bodies() -> None:
    """Commit mode, the commit and event bodies as sent, no floor."""
    first = record()
    assert first.mode == "commit"
    assert first.not_before_ms is None
    assert first.commit_body == _wire.to_wire(COMMIT)
    assert commit_request(first).unwrap() == COMMIT
    assert event_request(first).unwrap() == event_fallback("rsv_7f3a", COMMIT, SUBJECT, ACTION)


def test_bodies_are_decoded_strictly() -> None:
    """A body with a field this version does not send cannot be replayed unchanged: refused."""
    body = {**_wire.to_wire(COMMIT), "surprise": 1}
    assert not is_successful(commit_request(record(commit_body=body)))
    assert not is_successful(event_request(record(mode="commit", event_fallback_body=None)))


# Encoding ----------------------------------------------------------------------------------


def test_encoding_is_byte_identical_to_the_python_sdk() -> None:
    """The official Python SDK writes exactly these bytes for the same record."""
    ours = record(not_before_ms=1_785_950_002_000, reservation_id="r🚀")
    assert encode_record(ours) == peer_json(ours).encode("utf-8")
    assert list(json.loads(encode_record(ours))) == [
        "version",
        "reservation_id",
        "base_url",
        "mode",
        "commit_body",
        "event_fallback_body",
        "recorded_at_ms",
        "not_before_ms",
    ]


def test_python_sdk_reads_our_records() -> None:
    """A record we write parses in the official SDK unchanged."""
    ours = record(mode="event", not_before_ms=5)
    theirs = peer_parse(encode_record(ours).decode())
    assert (theirs.reservation_id, theirs.mode, theirs.not_before_ms) == ("rsv_7f3a", "event", 5)
    assert theirs.commit_body == ours.commit_body
    assert theirs.event_fallback_body == ours.event_fallback_body


def test_we_read_python_sdk_records_in_any_layout() -> None:
    """Any key order, any whitespace, unknown extra keys: all fine."""
    theirs = JournalRecord(
        reservation_id="rsv_x",
        base_url="http://h",
        mode="commit",
        commit_body={"idempotency_key": "k", "actual": {"unit": "TOKENS", "amount": 3}},
        event_fallback_body=None,
        recorded_at_ms=9,
    )
    document = json.loads(peer_json(theirs))
    reordered = {key: document[key] for key in reversed(list(document))}
    raw = json.dumps({**reordered, "future_field": [1, 2]}, indent=4).encode()
    decoded = decode_record(raw).unwrap()
    assert decoded.reservation_id == "rsv_x"
    assert commit_request(decoded).unwrap() == CommitRequest(
        idempotency_key="k", actual=Amount.tokens(3)
    )


def test_absent_optional_keys_take_the_peer_defaults() -> None:
    """No mode means commit; no base_url means "" (never replayed); no timestamp means 0."""
    raw = json.dumps({"version": 1, "reservation_id": "r", "commit_body": {}}).encode()
    decoded = decode_record(raw).unwrap()
    assert (decoded.mode, decoded.base_url, decoded.recorded_at_ms) == ("commit", "", 0)
    assert decoded.not_before_ms is None


@given(
    reservation_id=st.text(min_size=1, max_size=40),
    base_url=st.text(max_size=40),
    mode=st.sampled_from(["commit", "event"]),
    recorded_at_ms=st.integers(min_value=0, max_value=2**53),
    not_before_ms=st.none() | st.integers(min_value=0, max_value=2**53),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=3),
)
def test_records_round_trip(
    reservation_id: str,
    base_url: str,
    mode: str,
    recorded_at_ms: int,
    not_before_ms: int | None,
    metadata: dict[str, str | int],
) -> None:
    """decode(encode(record)) == record for any valid record."""
    body: JsonObject = {
        "idempotency_key": "k",
        "actual": {"unit": "TOKENS", "amount": 1},
        "metadata": metadata,
    }
    original = JournalRecord(
        reservation_id=reservation_id,
        base_url=base_url,
        mode="event" if mode == "event" else "commit",
        commit_body=body,
        event_fallback_body=body,
        recorded_at_ms=recorded_at_ms,
        not_before_ms=not_before_ms,
    )
    assert decode_record(encode_record(original)).unwrap() == original


# Validation: what must be quarantined (D4, pitfall 14) -----------------------------------

VALID = json.loads(encode_record(record()))

BAD: list[tuple[str, bytes]] = [
    ("not json", b"{not json"),
    ("array", b"[]"),
    ("string", b'"record"'),
    ("invalid utf-8", b'{"version": 1, "reservation_id": "\xff"}'),
    ("NaN constant", json.dumps({**VALID, "recorded_at_ms": "x"}).replace('"x"', "NaN").encode()),
    ("version 2", json.dumps({**VALID, "version": 2}).encode()),
    ("version true", json.dumps({**VALID, "version": True}).encode()),
    ("version '1'", json.dumps({**VALID, "version": "1"}).encode()),
    ("version 1.0", json.dumps({**VALID, "version": 1.0}).encode()),
    ("version missing", json.dumps({k: v for k, v in VALID.items() if k != "version"}).encode()),
    ("empty id", json.dumps({**VALID, "reservation_id": ""}).encode()),
    ("numeric id", json.dumps({**VALID, "reservation_id": 7}).encode()),
    ("id missing", json.dumps({k: v for k, v in VALID.items() if k != "reservation_id"}).encode()),
    ("mode null", json.dumps({**VALID, "mode": None}).encode()),
    ("mode unknown", json.dumps({**VALID, "mode": "release"}).encode()),
    ("commit without body", json.dumps({**VALID, "commit_body": None}).encode()),
    (
        "event without body",
        json.dumps({**VALID, "mode": "event", "event_fallback_body": None}).encode(),
    ),
    ("commit body array", json.dumps({**VALID, "commit_body": []}).encode()),
    ("event body array", json.dumps({**VALID, "event_fallback_body": [1]}).encode()),
    ("base_url number", json.dumps({**VALID, "base_url": 5}).encode()),
    ("base_url null", json.dumps({**VALID, "base_url": None}).encode()),
    ("recorded_at negative", json.dumps({**VALID, "recorded_at_ms": -1}).encode()),
    ("recorded_at bool", json.dumps({**VALID, "recorded_at_ms": False}).encode()),
    ("recorded_at float", json.dumps({**VALID, "recorded_at_ms": 1.5}).encode()),
    ("not_before negative", json.dumps({**VALID, "not_before_ms": -5}).encode()),
    ("not_before bool", json.dumps({**VALID, "not_before_ms": True}).encode()),
    ("not_before string", json.dumps({**VALID, "not_before_ms": "soon"}).encode()),
]


@pytest.mark.parametrize("raw", [row[1] for row in BAD], ids=[row[0] for row in BAD])
def test_malformed_or_unsupported_records_are_refused(raw: bytes) -> None:
    """Everything the peers refuse is refused, and judged for quarantine."""
    assert not is_successful(decode_record(raw))
    assert isinstance(judge_file("v2-x.json", raw), Quarantine)


def test_the_valid_baseline_is_accepted() -> None:
    """The fixture the bad cases are derived from is itself valid."""
    assert is_successful(decode_record(json.dumps(VALID).encode()))


def test_judging_files_by_name() -> None:
    """Standard name: keep. Another name: migrate to the standard one."""
    raw = encode_record(record(reservation_id="rsv/a"))
    assert judge_file(standard_filename("rsv/a"), raw) == Keep(decode_record(raw).unwrap())
    verdict = judge_file("rsv_a.json", raw)
    assert isinstance(verdict, Migrate)
    assert verdict.target == standard_filename("rsv/a")
    assert verdict.record.reservation_id == "rsv/a"
