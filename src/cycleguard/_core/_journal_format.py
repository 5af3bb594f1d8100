"""The settlement journal's on-disk format, shared byte for byte with the official SDKs.

One JSON file per unresolved settlement, in ``<base>/<fingerprint>/``:

- the file name is ``v2-<sha256 hex of the exact UTF-8 reservation id>.json``;
- the identity directory is a 16-hex-digit PBKDF2 fingerprint of the server and
  principal (the tenant when one is set, otherwise the API key), so the key
  itself is never written anywhere;
- the record holds ``version`` (1), ``reservation_id``, ``base_url``, ``mode``
  (``"commit"`` or ``"event"``), ``commit_body`` and ``event_fallback_body``
  (the exact wire bodies), ``recorded_at_ms`` and ``not_before_ms``.

This module only turns records into bytes and back and names files; the I/O is
in :mod:`cycleguard._journal`. Reading is strict: any record the peers would
refuse is refused here too (and quarantined by the caller).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Literal, TypeAlias, cast, final

import attrs
from returns.result import Failure, Result, Success

from cycleguard._core import _wire
from cycleguard._core._json import JsonObject
from cycleguard._core._models import Action, CommitRequest, EventCreateRequest, Subject

RECORD_VERSION = 1
"""The only record format version this version reads and writes."""

JSON_SUFFIX = ".json"
CORRUPT_SUFFIX = ".corrupt"
TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600
"""Temp files older than this come from crashed writers and may be removed."""

FINGERPRINT_SALT_PREFIX = "runcycles-commit-journal\n"
FINGERPRINT_ITERATIONS = 30_000
RECOVERY_REASON = "commit_after_reservation_expired"

JournalMode: TypeAlias = Literal["commit", "event"]

_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@final
@attrs.frozen(kw_only=True)
class JournalRecord:
    """One unresolved settlement, exactly as the file holds it.

    ``commit_body`` is required in commit mode and ``event_fallback_body`` in
    event mode. ``not_before_ms`` is the absolute wall-clock floor a 429's
    ``Retry-After`` set, or ``None``.
    """

    reservation_id: str
    base_url: str
    mode: JournalMode
    commit_body: JsonObject | None
    event_fallback_body: JsonObject | None
    recorded_at_ms: int
    not_before_ms: int | None = None


# Names -------------------------------------------------------------------------


def standard_filename(reservation_id: str) -> str:
    """The file name of a reservation's record: sha256 of its exact UTF-8 id.

    >>> standard_filename("rsv_abc-123")
    'v2-fe159e4dab8f7a05b609a0810be4800a22f3b08fc55a2762d2cded54d1484ec9.json'
    """
    digest = hashlib.sha256(reservation_id.encode("utf-8")).hexdigest()
    return f"v2-{digest}{JSON_SUFFIX}"


def legacy_filename(reservation_id: str) -> str:
    """The pre-v2 name (read only to migrate): every char outside ``[A-Za-z0-9_-]`` -> ``_``.

    >>> legacy_filename("rsv/a")
    'rsv_a.json'
    """
    return _LEGACY_UNSAFE.sub("_", reservation_id) + JSON_SUFFIX


def quarantine_name(filename: str) -> str:
    """The name a malformed record is moved to: ``.json`` becomes ``.corrupt``.

    >>> quarantine_name("v2-ab.json"), quarantine_name("odd")
    ('v2-ab.corrupt', 'odd.corrupt')
    """
    stem = filename.removesuffix(JSON_SUFFIX)
    return stem + CORRUPT_SUFFIX


def temp_filename(target: str, pid: int, token: str) -> str:
    """A writer-unique temp name next to ``target``: ``<target>.<pid>.<token>.tmp``.

    >>> temp_filename("v2-ab.json", 42, "0badc0de")
    'v2-ab.json.42.0badc0de.tmp'
    """
    return f"{target}.{pid}.{token}{TMP_SUFFIX}"


def principal(api_key: str, tenant: str | None) -> str:
    """Whose records these are: the tenant when set and not blank, else the API key.

    The tenant is used untrimmed, exactly as configured.
    """
    if tenant is not None and tenant.strip():
        return f"tenant\n{tenant}"
    return f"key\n{api_key}"


@functools.lru_cache(maxsize=256)
def _fingerprint(base_url: str, who: str) -> str:
    digest = hashlib.pbkdf2_hmac(
        "sha256",
        who.encode("utf-8"),
        (FINGERPRINT_SALT_PREFIX + base_url).encode("utf-8"),
        FINGERPRINT_ITERATIONS,
        dklen=32,
    )
    return digest.hex()[:16]


def fingerprint(base_url: str, api_key: str, tenant: str | None = None) -> str:
    """The identity directory name for a server and principal (16 lowercase hex digits).

    ``base_url`` is used exactly as configured. It takes tens of milliseconds
    the first time for an identity (cached afterwards): call it off the event loop.

    >>> fingerprint("http://localhost", "test-key")
    '68c905017df7dbfc'
    >>> fingerprint("http://localhost", "rotated-key", "acme")
    '8baba538fb970da4'
    """
    return _fingerprint(base_url, principal(api_key, tenant))


# Building records ---------------------------------------------------------------


def event_fallback(
    reservation_id: str, commit: CommitRequest, subject: Subject, action: Action
) -> EventCreateRequest:
    """The ``POST /v1/events`` body that settles ``commit`` if the reservation expired.

    Same idempotency key, actual and metrics; the commit's metadata plus
    ``recovered_reservation_id`` and ``recovery_reason``; no ``overage_policy``,
    so the spec default (``ALLOW_IF_AVAILABLE``) applies to spend that happened.

    >>> from cycleguard._core._models import Amount
    >>> event = event_fallback("rsv_1", CommitRequest(idempotency_key="k", actual=Amount.tokens(5)),
    ...                        Subject(tenant="acme"), Action("llm.completion", "m"))
    >>> event.idempotency_key, dict(event.metadata or {})["recovered_reservation_id"]
    ('k', 'rsv_1')
    """
    metadata: dict[str, object] = dict(commit.metadata or {})
    metadata["recovered_reservation_id"] = reservation_id
    metadata["recovery_reason"] = RECOVERY_REASON
    return EventCreateRequest(
        idempotency_key=commit.idempotency_key,
        subject=subject,
        action=action,
        actual=commit.actual,
        metrics=commit.metrics,
        metadata=cast("JsonObject", metadata),
    )


def new_record(
    *,
    reservation_id: str,
    base_url: str,
    commit: CommitRequest,
    event: EventCreateRequest | None,
    now_ms: int,
) -> JournalRecord:
    """The first record of a settlement: commit mode, both bodies, no floor.

    ``event`` is ``None`` only when no valid fallback can be built; an expired
    reservation then cannot be settled from this record.
    """
    return JournalRecord(
        reservation_id=reservation_id,
        base_url=base_url,
        mode="commit",
        commit_body=_wire.to_wire(commit),
        event_fallback_body=None if event is None else _wire.to_wire(event),
        recorded_at_ms=now_ms,
        not_before_ms=None,
    )


def commit_request(record: JournalRecord) -> Result[CommitRequest, str]:
    """The commit a record would send, strictly decoded (unknown fields are an error)."""
    if record.commit_body is None:
        return Failure("record has no commit_body")
    return _wire.structure(dict(record.commit_body), CommitRequest, converter=_wire.STRICT)


def event_request(record: JournalRecord) -> Result[EventCreateRequest, str]:
    """The event a record would send, strictly decoded (unknown fields are an error)."""
    if record.event_fallback_body is None:
        return Failure("record has no event_fallback_body")
    return _wire.structure(
        dict(record.event_fallback_body), EventCreateRequest, converter=_wire.STRICT
    )


# Encoding and decoding ----------------------------------------------------------


def encode_record(record: JournalRecord) -> bytes:
    """The record's file content: all eight keys, in the official SDKs' order and layout.

    The bytes equal what the Python SDK writes for the same record (standard
    ``json.dumps`` spacing, ASCII escapes), so every peer reads them.

    >>> encode_record(JournalRecord(reservation_id="r", base_url="http://h", mode="event",
    ...     commit_body=None, event_fallback_body={"idempotency_key": "k"}, recorded_at_ms=1))
    b'{"version": 1, "reservation_id": "r", "base_url": "http://h", "mode": "event", \
"commit_body": null, "event_fallback_body": {"idempotency_key": "k"}, "recorded_at_ms": 1, \
"not_before_ms": null}'
    """
    document = {
        "version": RECORD_VERSION,
        "reservation_id": record.reservation_id,
        "base_url": record.base_url,
        "mode": record.mode,
        "commit_body": None if record.commit_body is None else dict(record.commit_body),
        "event_fallback_body": (
            None if record.event_fallback_body is None else dict(record.event_fallback_body)
        ),
        "recorded_at_ms": record.recorded_at_ms,
        "not_before_ms": record.not_before_ms,
    }
    return _RECORD_ENCODER.encode(document).encode("utf-8")


# ``json.dumps`` with an option builds an encoder per call; this one has the same settings.
_RECORD_ENCODER = json.JSONEncoder(allow_nan=False)


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


def _natural(value: object) -> bool:
    return type(value) is int and value >= 0


def decode_record(raw: bytes) -> Result[JournalRecord, str]:
    """Read a record file; a failure says why it must be quarantined.

    The rules are the peers': the version must be the integer 1; the
    reservation id a non-empty string; ``mode`` absent (commit), ``"commit"``
    or ``"event"``; the mode's body an object; any present body an object or
    null; ``base_url`` a string if present (absent reads as ``""``, so it is
    never replayed); timestamps non-negative integers, never booleans.
    Unknown extra keys are ignored.

    >>> decode_record(b'{"version": 2, "reservation_id": "r"}').failure()
    'unsupported record version 2'
    >>> decode_record(b'[]').failure()
    'record is not a JSON object'
    """
    try:
        data: object = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        return Failure(f"record is not JSON: {error}")
    if not isinstance(data, dict):
        return Failure("record is not a JSON object")
    fields = cast("dict[str, object]", data)
    version = fields.get("version")
    if type(version) is not int or version != RECORD_VERSION:
        return Failure(f"unsupported record version {version!r}")
    reservation_id = fields.get("reservation_id")
    if not isinstance(reservation_id, str) or not reservation_id:
        return Failure("reservation_id is missing or not a non-empty string")
    mode = fields.get("mode", "commit")
    if mode not in ("commit", "event"):
        return Failure(f"unknown mode {mode!r}")
    bodies: dict[str, JsonObject | None] = {}
    for key in ("commit_body", "event_fallback_body"):
        body = fields.get(key)
        if body is not None and not isinstance(body, dict):
            return Failure(f"{key} is not an object")
        bodies[key] = cast("JsonObject | None", body)
    active = "commit_body" if mode == "commit" else "event_fallback_body"
    if bodies[active] is None:
        return Failure(f"{mode}-mode record lacks {active}")
    base_url = fields.get("base_url", "")
    if not isinstance(base_url, str):
        return Failure("base_url is not a string")
    recorded_at_ms = fields.get("recorded_at_ms", 0)
    if not _natural(recorded_at_ms):
        return Failure("recorded_at_ms is not a non-negative integer")
    floor = fields.get("not_before_ms")
    if floor is not None and not _natural(floor):
        return Failure("not_before_ms is not a non-negative integer")
    return Success(
        JournalRecord(
            reservation_id=reservation_id,
            base_url=base_url,
            mode=mode,
            commit_body=bodies["commit_body"],
            event_fallback_body=bodies["event_fallback_body"],
            recorded_at_ms=cast("int", recorded_at_ms),
            not_before_ms=cast("int | None", floor),
        )
    )


# Loading decisions ----------------------------------------------------------------


@final
@attrs.frozen
class Quarantine:
    """Move the file aside to ``.corrupt``: ``reason`` says what is wrong with it."""

    reason: str


@final
@attrs.frozen
class Keep:
    """The file is a valid record under its standard name."""

    record: JournalRecord


@final
@attrs.frozen
class Migrate:
    """A valid record under another (legacy) name: move it to ``target`` if that is free."""

    record: JournalRecord
    target: str


FileVerdict: TypeAlias = Quarantine | Keep | Migrate


def judge_file(filename: str, raw: bytes) -> FileVerdict:
    """What to do with one ``*.json`` file found in an identity directory.

    >>> judge_file("x.json", b"[1]")
    Quarantine(reason='record is not a JSON object')
    >>> judge_file("rsv_a.json", b'{"version": 1, "reservation_id": "rsv/a",'
    ...            b' "commit_body": {}}').target == standard_filename("rsv/a")
    True
    """
    decoded = decode_record(raw)
    if not isinstance(decoded, Success):
        return Quarantine(decoded.failure())
    record = decoded.unwrap()
    target = standard_filename(record.reservation_id)
    if filename == target:
        return Keep(record)
    return Migrate(record, target)
