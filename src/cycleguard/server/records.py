"""What the embedded server stores, and the outcomes its rules hand back.

Every stored record is a frozen value with three index properties a store
uses: ``store_key`` (unique within its record type), ``tenant_index`` (the
owning tenant, for per-tenant scans) and ``due_index`` (when the sweeper must
look at it, if ever). Stores know nothing else about the records.

Nothing here performs I/O.
"""

from __future__ import annotations

import enum
import json
import json.encoder
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Protocol, TypeAlias, final

import attrs
import orjson

from cycleguard._core._errors import ErrorCode
from cycleguard._core._json import JsonObject
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

if TYPE_CHECKING:
    from collections.abc import ItemsView, KeysView, ValuesView

    from cycleguard._core._json import JsonValue

__all__ = (
    "RECORD_TYPES",
    "RESERVATION_RETENTION_MS",
    "STATUS_BY_CODE",
    "ApiKeyRecord",
    "Budget",
    "BudgetStatus",
    "EventRecord",
    "IdempotencyRecord",
    "JsonText",
    "KeyHash",
    "KeyStatus",
    "PolicyRecord",
    "PolicyStatus",
    "Record",
    "Rejection",
    "Reply",
    "ReservationRecord",
    "RolloverPolicy",
    "StoredRecord",
    "Tenant",
    "TenantStatus",
    "TtlOverride",
    "budget_key",
    "canonical_json",
    "compact_json",
    "idempotency_key",
    "json_text",
    "read_json",
    "rejection",
)


_MakeEncoder: TypeAlias = Callable[..., Callable[[object, int], Iterable[str]]]


def _json_text_value(value: object) -> object:
    """A :class:`JsonText`'s object, for the stdlib encoder (it holds its own encoding)."""
    if isinstance(value, JsonText):
        return json.loads(value.text)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_text_fragment(value: object) -> orjson.Fragment:
    """A :class:`JsonText` as orjson writes it: its text, spliced in without decoding."""
    if isinstance(value, JsonText):
        return orjson.Fragment(value.text)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _stdlib_encoder(*, sort_keys: bool) -> Callable[[object], str]:
    """``JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=...).encode``.

    ``JSONEncoder.encode`` builds a new C encoder on every call; this one is
    built once. What the server encodes (parsed JSON, records, answers) is
    never circular, so it skips the circular check, as a reused C encoder must.
    """
    fallback = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, default=_json_text_value
    )
    # What JSONEncoder.iterencode itself uses, when the interpreter has it.
    make_encoder: _MakeEncoder | None = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return fallback.encode
    encoder = make_encoder(
        None,
        fallback.default,
        encode_basestring,
        None,
        fallback.key_separator,
        fallback.item_separator,
        fallback.sort_keys,
        fallback.skipkeys,
        fallback.allow_nan,
    )

    def encode(value: object) -> str:
        return "".join(encoder(value, 0))

    return encode


def _json_encoder(*, sort_keys: bool) -> Callable[[object], str]:
    """Compact JSON text, written by orjson (about eight times faster than the stdlib's
    C encoder on the server's records, a large share of a request's time).

    For everything the server encodes, orjson writes the same text as the stdlib
    encoder built with ``separators=(",", ":"), ensure_ascii=False``, except that
    some floats are written in another form of the same number (``0.00001`` for
    ``1e-05``, ``1e-7`` for ``1e-07``). What orjson refuses (integers beyond
    64 bits, lone surrogates: only in JSON read by :func:`read_json`'s fallback)
    the stdlib encoder writes, so nothing encodable is refused. Either way a
    :class:`JsonText` is written as the object it holds.
    """
    stdlib = _stdlib_encoder(sort_keys=sort_keys)
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    dumps = orjson.dumps

    def encode(value: object) -> str:
        try:
            return dumps(value, default=_json_text_fragment, option=option).decode()
        except orjson.JSONEncodeError:
            return stdlib(value)

    return encode


compact_json: Callable[[object], str] = _json_encoder(sort_keys=False)
"""Compact JSON text of a JSON-ready value (keys in their order, no insignificant
space, non-ASCII text as is).

>>> compact_json({"b": [1, None, True], "a": "é\\n"})
'{"b":[1,null,true],"a":"é\\\\n"}'
"""

canonical_json: Callable[[object], str] = _json_encoder(sort_keys=True)
""":func:`compact_json` with sorted keys.

>>> canonical_json({"b": 1, "a": {"d": 2.5, "c": 1e-05}})
'{"a":{"c":0.00001,"d":2.5},"b":1}'
"""

_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_TWENTY_DIGITS = b"0" * 20
"""Twenty digits in a row may be an integer beyond 64 bits, which orjson would read
as a float (silently losing digits). Mapping every digit to ``0`` and looking for
twenty zeros costs a fifth of a regular expression search."""


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text} is out of range")
    return number


def read_json(raw: bytes) -> object:
    """Parse UTF-8 JSON as the server accepts it; raises ``ValueError`` if it is not JSON.

    Strict JSON, by orjson's rules: no ``NaN`` or ``Infinity``, no number too
    large for a float, no byte-order mark, no unpaired surrogate escape. Text
    holding twenty digits in a row is read by the stdlib parser instead, so that
    integers of any size arrive exact (and are then refused where they are out of
    range); it refuses the same constants, numbers and escapes.

    >>> read_json(b'{"amount": 123456789012345678901234}')
    {'amount': 123456789012345678901234}
    >>> for text in (b'{"x": NaN}', b'{"x": 1e400}', b'{"x": NaN, "n": 123456789012345678901}'):
    ...     try:
    ...         read_json(text)
    ...     except ValueError:
    ...         print("refused")
    refused
    refused
    refused
    """
    if _TWENTY_DIGITS not in raw.translate(_DIGITS_AS_ZEROS):
        return orjson.loads(raw)
    value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
    # The stdlib reads an unpaired surrogate escape as a lone surrogate, which no
    # UTF-8 answer could hold; encoding the value raises UnicodeEncodeError for it.
    compact_json(value).encode("utf-8")
    return value


@final
class JsonText(Mapping[str, "JsonValue"]):
    """A JSON object held as its compact encoding: the stored answers that replays send.

    Stored answers stay in memory for as long as their records do, and are
    only read again for a replay. As one string they cost the garbage
    collector one object with one reference instead of a tree of dicts and
    lists (full collections pause the server for time proportional to the
    objects they scan), and they are encoded once: the response sends the
    same text. Reading it decodes the text afresh each time.
    """

    __slots__ = ("text",)
    text: str

    def __init__(self, text: str) -> None:
        self.text = text

    def _decoded(self) -> dict[str, JsonValue]:
        decoded: dict[str, JsonValue] = json.loads(self.text)
        return decoded

    def __getitem__(self, key: str) -> JsonValue:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def keys(self) -> KeysView[str]:
        return self._decoded().keys()

    def items(self) -> ItemsView[str, JsonValue]:
        return self._decoded().items()

    def values(self) -> ValuesView[JsonValue]:
        return self._decoded().values()

    def __repr__(self) -> str:
        return f"JsonText({self.text!r})"


def json_text(body: JsonObject) -> JsonText:
    """``body`` as :class:`JsonText` (encoded unless it already is)."""
    if isinstance(body, JsonText):
        return body
    return JsonText(compact_json(body))


def _optional_json_text(body: JsonObject | None) -> JsonText | None:
    return None if body is None else json_text(body)


class TenantStatus(enum.Enum):
    """Lifecycle of a tenant. ``CLOSED`` is terminal."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class BudgetStatus(enum.Enum):
    """Lifecycle of a budget ledger. ``CLOSED`` is terminal."""

    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class KeyStatus(enum.Enum):
    """Lifecycle of an API key (``EXPIRED`` is derived from ``expires_at``)."""

    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class PolicyStatus(enum.Enum):
    """Whether a policy takes part in decisions."""

    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


class RolloverPolicy(enum.Enum):
    """Stored with a budget for the admin plane; the runtime does not act on it."""

    NONE = "NONE"
    CARRY_FORWARD = "CARRY_FORWARD"
    CAP_AT_ALLOCATED = "CAP_AT_ALLOCATED"


class StoredRecord(Protocol):
    """What a store needs to know about a record."""

    @property
    def store_key(self) -> str:
        """Unique key of the record within its type."""
        ...

    @property
    def tenant_index(self) -> str | None:
        """The owning tenant, for per-tenant scans; ``None`` if not tenant-owned."""
        ...

    @property
    def due_index(self) -> int | None:
        """When the sweeper must look at the record (Unix ms), or ``None``."""
        ...


@final
@attrs.frozen(kw_only=True)
class Tenant:
    """A tenant and its reservation defaults."""

    tenant_id: str
    name: str
    status: TenantStatus = TenantStatus.ACTIVE
    created_at_ms: int
    updated_at_ms: int | None = None
    suspended_at_ms: int | None = None
    closed_at_ms: int | None = None
    parent_tenant_id: str | None = None
    metadata: Mapping[str, str] | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: int | None = None
    max_reservation_ttl_ms: int | None = None
    max_reservation_extensions: int | None = None
    reservation_expiry_policy: str | None = None

    @property
    def store_key(self) -> str:
        """The tenant id."""
        return self.tenant_id

    @property
    def tenant_index(self) -> str | None:
        """A tenant owns itself."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Tenants never expire."""
        return None


@final
@attrs.frozen(kw_only=True)
class ApiKeyRecord:
    """A tenant API key. The secret itself is never stored, only its SHA-256."""

    key_id: str
    tenant_id: str
    key_prefix: str
    secret_hash: str = attrs.field(repr=False)
    name: str
    permissions: tuple[str, ...]
    scope_filter: tuple[str, ...] | None = None
    status: KeyStatus = KeyStatus.ACTIVE
    created_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int | None = None
    revoked_reason: str | None = None
    metadata: JsonObject | None = None

    @property
    def store_key(self) -> str:
        """The key id."""
        return self.key_id

    @property
    def tenant_index(self) -> str | None:
        """The tenant the key acts for."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Keys are kept for audit; nothing to sweep."""
        return None

    def effective_status(self, now_ms: int) -> KeyStatus:
        """``EXPIRED`` once ``expires_at`` has passed, else the stored status."""
        if self.status is KeyStatus.ACTIVE and now_ms >= self.expires_at_ms:
            return KeyStatus.EXPIRED
        return self.status


@final
@attrs.frozen(kw_only=True)
class KeyHash:
    """Lookup from a secret's SHA-256 (hex) to its key id."""

    secret_hash: str
    key_id: str

    @property
    def store_key(self) -> str:
        """The secret's hash."""
        return self.secret_hash

    @property
    def tenant_index(self) -> str | None:
        """Not tenant-scanned."""
        return None

    @property
    def due_index(self) -> int | None:
        """Never swept."""
        return None


def budget_key(scope: str, unit: Unit) -> str:
    """The store key of the budget for ``(scope, unit)``.

    >>> budget_key("tenant:acme", Unit.TOKENS)
    'tenant:acme#TOKENS'
    """
    return f"{scope}#{unit.value}"


@final
@attrs.frozen(kw_only=True)
class Budget:
    """One budget ledger for a ``(scope, unit)`` pair.

    The ledger identity ``allocated == remaining + spent + reserved + debt``
    holds after every operation; ``remaining`` may be negative under overdraft.
    """

    scope: str
    unit: Unit
    tenant_id: str
    ledger_id: str
    allocated: int
    remaining: int
    reserved: int = 0
    spent: int = 0
    debt: int = 0
    overdraft_limit: int = 0
    is_over_limit: bool = False
    status: BudgetStatus = BudgetStatus.ACTIVE
    commit_overage_policy: OveragePolicy | None = None
    rollover_policy: RolloverPolicy | None = None
    period_start_ms: int | None = None
    period_end_ms: int | None = None
    metadata: JsonObject | None = None
    created_at_ms: int
    updated_at_ms: int | None = None

    def with_balances(
        self, *, remaining: int, reserved: int, spent: int, debt: int, updated_at_ms: int
    ) -> Budget:
        """This budget with new balances.

        ``attrs.evolve`` at about half its cost: two budgets change on every
        reserve and commit, and evolve walks every field on each call.
        """
        return Budget(
            scope=self.scope,
            unit=self.unit,
            tenant_id=self.tenant_id,
            ledger_id=self.ledger_id,
            allocated=self.allocated,
            remaining=remaining,
            reserved=reserved,
            spent=spent,
            debt=debt,
            overdraft_limit=self.overdraft_limit,
            is_over_limit=self.is_over_limit,
            status=self.status,
            commit_overage_policy=self.commit_overage_policy,
            rollover_policy=self.rollover_policy,
            period_start_ms=self.period_start_ms,
            period_end_ms=self.period_end_ms,
            metadata=self.metadata,
            created_at_ms=self.created_at_ms,
            updated_at_ms=updated_at_ms,
        )

    @property
    def store_key(self) -> str:
        """``scope#UNIT``."""
        return budget_key(self.scope, self.unit)

    @property
    def tenant_index(self) -> str | None:
        """The tenant that owns the scope."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Budgets never expire."""
        return None


RESERVATION_RETENTION_MS = 30 * 24 * 3_600_000
"""How long a finished reservation stays readable before the sweeper removes it: 30
days after its commit or release, or after the end of its grace period if it expired
(what the reference server keeps). Budgets keep its spend; without a limit a
long-running server's memory and database would grow with every reservation."""


@final
@attrs.frozen(kw_only=True)
class ReservationRecord:
    """A reservation and everything needed to settle it or replay its answers."""

    reservation_id: str
    tenant_id: str
    state: LeaseState
    subject: Subject
    action: Action
    estimate: Amount
    scope_path: str
    affected_scopes: tuple[str, ...]
    budgeted_scopes: tuple[str, ...]
    created_at_ms: int
    expires_at_ms: int
    grace_period_ms: int
    overage_policy: OveragePolicy
    max_extensions: int
    max_ttl_ms: int
    extension_count: int = 0
    idempotency_key: str
    metadata: JsonObject | None = None
    finalized_at_ms: int | None = None
    charged: Amount | None = None
    debt_incurred: int = 0
    committed_metadata: JsonObject | None = None
    metrics: StandardMetrics | None = None
    release_reason: str | None = None
    commit_key: str | None = None
    commit_hash: str | None = None
    commit_response: JsonText | None = attrs.field(default=None, converter=_optional_json_text)
    release_key: str | None = None
    release_hash: str | None = None
    release_response: JsonText | None = attrs.field(default=None, converter=_optional_json_text)

    @property
    def store_key(self) -> str:
        """The reservation id."""
        return self.reservation_id

    @property
    def tenant_index(self) -> str | None:
        """The tenant that created the reservation."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """An active reservation is due for expiry once its grace period ends; a
        finished one for removal once its retention ends."""
        lapses_at = self.expires_at_ms + self.grace_period_ms
        if self.state is LeaseState.ACTIVE:
            return lapses_at
        finished_at = lapses_at if self.finalized_at_ms is None else self.finalized_at_ms
        return finished_at + RESERVATION_RETENTION_MS


def idempotency_key(tenant_id: str, endpoint: str, key: str) -> str:
    """The store key of an idempotency record: unambiguous for any key text.

    Tenant ids and endpoint names never contain ``|``; the client's key goes last.

    >>> idempotency_key("acme", "reserve", "k|1")
    'acme|reserve|k|1'
    """
    return f"{tenant_id}|{endpoint}|{key}"


@final
@attrs.frozen(kw_only=True)
class IdempotencyRecord:
    """The stored success of one keyed request: its payload hash and its answer."""

    tenant_id: str
    endpoint: str
    key: str
    payload_hash: str
    response: JsonText = attrs.field(converter=json_text)
    status_code: int
    created_at_ms: int
    expires_at_ms: int
    reservation_id: str | None = None

    @property
    def store_key(self) -> str:
        """``[tenant, endpoint, key]`` as compact JSON."""
        return idempotency_key(self.tenant_id, self.endpoint, self.key)

    @property
    def tenant_index(self) -> str | None:
        """The tenant the key space belongs to."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Purged by the sweeper once it expires."""
        return self.expires_at_ms


@final
@attrs.frozen(kw_only=True)
class TtlOverride:
    """A policy's reservation TTL settings; each overrides the tenant's."""

    default_ttl_ms: int | None = None
    max_ttl_ms: int | None = None
    max_extensions: int | None = None


@final
@attrs.frozen(kw_only=True)
class PolicyRecord:
    """A tenant policy: caps and defaults for the scopes its pattern matches."""

    policy_id: str
    tenant_id: str
    name: str
    scope_pattern: str
    priority: int = 0
    caps: Caps | None = None
    commit_overage_policy: OveragePolicy | None = None
    reservation_ttl_override: TtlOverride | None = None
    rate_limits: JsonObject | None = None
    effective_from_ms: int | None = None
    effective_until_ms: int | None = None
    status: PolicyStatus = PolicyStatus.ACTIVE
    created_at_ms: int
    updated_at_ms: int | None = None

    @property
    def store_key(self) -> str:
        """The policy id."""
        return self.policy_id

    @property
    def tenant_index(self) -> str | None:
        """The owning tenant."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Policies never expire."""
        return None


@final
@attrs.frozen(kw_only=True)
class EventRecord:
    """A direct debit recorded by ``POST /v1/events``."""

    event_id: str
    tenant_id: str
    subject: Subject
    action: Action
    actual: Amount
    charged: Amount
    overage_policy: OveragePolicy
    scope_path: str
    budgeted_scopes: tuple[str, ...]
    idempotency_key: str
    created_at_ms: int
    debt_incurred: int = 0
    metrics: StandardMetrics | None = None
    client_time_ms: int | None = None
    metadata: JsonObject | None = None

    @property
    def store_key(self) -> str:
        """The event id."""
        return self.event_id

    @property
    def tenant_index(self) -> str | None:
        """The tenant that recorded the spend."""
        return self.tenant_id

    @property
    def due_index(self) -> int | None:
        """Kept; nothing to sweep."""
        return None


Record: TypeAlias = (
    Tenant
    | ApiKeyRecord
    | KeyHash
    | Budget
    | ReservationRecord
    | IdempotencyRecord
    | PolicyRecord
    | EventRecord
)
"""Every record type a store holds."""

RECORD_TYPES: tuple[type[Record], ...] = (
    Tenant,
    ApiKeyRecord,
    KeyHash,
    Budget,
    ReservationRecord,
    IdempotencyRecord,
    PolicyRecord,
    EventRecord,
)
"""Record types in a fixed order; their ``__name__`` is their stored kind."""


# Outcomes -------------------------------------------------------------------

STATUS_BY_CODE: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNIT_MISMATCH: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BUDGET_EXCEEDED: 409,
    ErrorCode.BUDGET_FROZEN: 409,
    ErrorCode.BUDGET_CLOSED: 409,
    ErrorCode.RESERVATION_FINALIZED: 409,
    ErrorCode.IDEMPOTENCY_MISMATCH: 409,
    ErrorCode.OVERDRAFT_LIMIT_EXCEEDED: 409,
    ErrorCode.DEBT_OUTSTANDING: 409,
    ErrorCode.MAX_EXTENSIONS_EXCEEDED: 409,
    ErrorCode.TENANT_CLOSED: 409,
    ErrorCode.RESERVATION_EXPIRED: 410,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
}
"""The one place that pairs each runtime ``error`` code with its HTTP status."""


@final
@attrs.frozen(kw_only=True)
class Rejection:
    """A refusal: HTTP status, wire ``error`` code, message and optional details."""

    status: int
    error: str
    message: str
    details: JsonObject | None = None


def rejection(code: ErrorCode, message: str, details: JsonObject | None = None) -> Rejection:
    """A runtime-plane refusal; its status comes from :data:`STATUS_BY_CODE`.

    >>> rejection(ErrorCode.BUDGET_EXCEEDED, "no").status
    409
    """
    return Rejection(
        status=STATUS_BY_CODE[code], error=code.value, message=message, details=details
    )


@final
@attrs.frozen(kw_only=True)
class Reply:
    """A successful answer: status, JSON body and the tenant it was served for."""

    status: int
    body: JsonObject
    tenant: str | None = None
