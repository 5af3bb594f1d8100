"""Frozen value types for every schema of the Cycles runtime plane (v0.1.25).

Field names are the wire names. Optional fields are ``None`` when the wire
omits them. Nothing here validates or performs I/O: validation is
:mod:`cycleguard._core._validation`, the codec is :mod:`cycleguard._core._wire`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Literal, final

import attrs

from cycleguard._core._json import JsonObject


class Unit(enum.Enum):
    """The unit an amount is counted in. ``USD_MICROCENTS``: 1 USD = 10**8."""

    USD_MICROCENTS = "USD_MICROCENTS"
    TOKENS = "TOKENS"
    CREDITS = "CREDITS"
    RISK_POINTS = "RISK_POINTS"


class Decision(enum.Enum):
    """The budget authority's answer."""

    ALLOW = "ALLOW"
    ALLOW_WITH_CAPS = "ALLOW_WITH_CAPS"
    DENY = "DENY"


class ReasonCode(enum.Enum):
    """Reason codes this version knows. The wire set is open: see :class:`UnknownReasonCode`."""

    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    BUDGET_FROZEN = "BUDGET_FROZEN"
    BUDGET_CLOSED = "BUDGET_CLOSED"
    BUDGET_NOT_FOUND = "BUDGET_NOT_FOUND"
    OVERDRAFT_LIMIT_EXCEEDED = "OVERDRAFT_LIMIT_EXCEEDED"
    DEBT_OUTSTANDING = "DEBT_OUTSTANDING"
    TENANT_CLOSED = "TENANT_CLOSED"
    ACTION_QUOTA_EXCEEDED = "ACTION_QUOTA_EXCEEDED"
    ACTION_KIND_DENIED = "ACTION_KIND_DENIED"
    ACTION_KIND_NOT_ALLOWED = "ACTION_KIND_NOT_ALLOWED"


@final
@attrs.frozen
class UnknownReasonCode:
    """A ``reason_code`` this version does not know, kept verbatim. Treat it as a generic DENY."""

    value: str


class OveragePolicy(enum.Enum):
    """What a commit or event does when the actual amount exceeds what is available."""

    REJECT = "REJECT"
    ALLOW_IF_AVAILABLE = "ALLOW_IF_AVAILABLE"
    ALLOW_WITH_OVERDRAFT = "ALLOW_WITH_OVERDRAFT"


class ReservationStatus(enum.Enum):
    """Server-side states of a reservation. Later versions may add terminal states."""

    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


@final
@attrs.frozen
class UnknownReservationStatus:
    """A reservation status this version does not know, kept verbatim."""

    value: str


@final
@attrs.frozen
class Amount:
    """A non-negative whole quantity in one unit.

    >>> Amount.tokens(1_500)
    Amount(unit=<Unit.TOKENS: 'TOKENS'>, amount=1500)
    >>> Amount.usd_microcents(100_000_000).amount  # one dollar
    100000000
    """

    unit: Unit
    amount: int

    @classmethod
    def tokens(cls, amount: int) -> Amount:
        """An amount of ``TOKENS``."""
        return cls(Unit.TOKENS, amount)

    @classmethod
    def usd_microcents(cls, amount: int) -> Amount:
        """An amount of ``USD_MICROCENTS`` (10**8 per dollar)."""
        return cls(Unit.USD_MICROCENTS, amount)

    @classmethod
    def credits(cls, amount: int) -> Amount:
        """An amount of ``CREDITS``."""
        return cls(Unit.CREDITS, amount)

    @classmethod
    def risk_points(cls, amount: int) -> Amount:
        """An amount of ``RISK_POINTS``."""
        return cls(Unit.RISK_POINTS, amount)


@final
@attrs.frozen
class SignedAmount:
    """A whole quantity that may be negative (a balance's ``remaining`` under overdraft)."""

    unit: Unit
    amount: int


SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
"""The six standard subject fields in canonical scope order."""


@final
@attrs.frozen(kw_only=True)
class Subject:
    """Who is spending: up to six hierarchical levels plus free ``dimensions``.

    At least one of the six standard fields must be set.

    >>> Subject(tenant="acme", agent="summarizer").levels()
    (('tenant', 'acme'), ('agent', 'summarizer'))
    """

    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    toolset: str | None = None
    dimensions: Mapping[str, str] | None = None

    def levels(self) -> tuple[tuple[str, str], ...]:
        """The standard fields that are set, in canonical order."""
        values = (self.tenant, self.workspace, self.app, self.workflow, self.agent, self.toolset)
        return tuple(
            (level, value) for level, value in zip(SUBJECT_LEVELS, values, strict=True) if value
        )

    def merged_over(self, defaults: Subject) -> Subject:
        """This subject with each unset field taken from ``defaults``.

        >>> Subject(agent="a").merged_over(Subject(tenant="t", agent="x")).levels()
        (('tenant', 't'), ('agent', 'a'))
        """
        dimensions = (
            {**defaults.dimensions, **(self.dimensions or {})}
            if defaults.dimensions
            else self.dimensions
        )
        return Subject(
            tenant=self.tenant if self.tenant is not None else defaults.tenant,
            workspace=self.workspace if self.workspace is not None else defaults.workspace,
            app=self.app if self.app is not None else defaults.app,
            workflow=self.workflow if self.workflow is not None else defaults.workflow,
            agent=self.agent if self.agent is not None else defaults.agent,
            toolset=self.toolset if self.toolset is not None else defaults.toolset,
            dimensions=dimensions,
        )


@final
@attrs.frozen
class Action:
    """What is being paid for: ``kind`` like ``llm.completion``, ``name`` like ``openai:gpt-4o``."""

    kind: str
    name: str
    tags: tuple[str, ...] | None = None


@final
@attrs.frozen(kw_only=True)
class Caps:
    """Soft limits that come with ``ALLOW_WITH_CAPS``; the caller applies them.

    >>> Caps(tool_denylist=("shell",)).filter_tools(["search", "shell"])
    ('search',)
    """

    max_tokens: int | None = None
    max_steps_remaining: int | None = None
    tool_allowlist: tuple[str, ...] | None = None
    tool_denylist: tuple[str, ...] | None = None
    cooldown_ms: int | None = None

    def allows_tool(self, name: str) -> bool:
        """Whether tool ``name`` may be used: a non-empty allowlist wins over the denylist."""
        if self.tool_allowlist:
            return name in self.tool_allowlist
        if self.tool_denylist:
            return name not in self.tool_denylist
        return True

    def filter_tools(self, names: Iterable[str]) -> tuple[str, ...]:
        """The names that :meth:`allows_tool` accepts, in their original order."""
        return tuple(name for name in names if self.allows_tool(name))


@final
@attrs.frozen(kw_only=True)
class StandardMetrics:
    """Optional usage metrics recorded with a commit or an event."""

    tokens_input: int | None = None
    tokens_output: int | None = None
    latency_ms: int | None = None
    model_version: str | None = None
    custom: JsonObject | None = None


@final
@attrs.frozen
class EvidenceRef:
    """A pointer to a signed evidence envelope (``CyclesEvidenceRef``)."""

    evidence_id: str
    cycles_evidence_url: str


@final
@attrs.frozen(kw_only=True)
class ReservationEvidence:
    """Evidence pointers for each step of a reservation."""

    reserve: EvidenceRef | None = None
    commit: EvidenceRef | None = None
    release: EvidenceRef | None = None


@final
@attrs.frozen(kw_only=True)
class Balance:
    """One budgeted scope's ledger. ``remaining`` is authoritative when ``allocated`` is absent."""

    scope: str
    scope_path: str
    remaining: SignedAmount
    reserved: Amount | None = None
    spent: Amount | None = None
    debt: Amount | None = None
    allocated: Amount | None = None
    overdraft_limit: Amount | None = None
    is_over_limit: bool = False


@final
@attrs.frozen(kw_only=True)
class ResponseMeta:
    """Transport facts about a response; not part of the JSON body.

    Every top-level response value carries one as ``meta`` (ignored by ``==``).
    """

    status: int
    request_id: str | None = None
    trace_id: str | None = None
    tenant: str | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset: int | None = None


# Requests -------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class DecisionRequest:
    """Body of ``POST /v1/decide``."""

    idempotency_key: str
    subject: Subject
    action: Action
    estimate: Amount
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class ReservationCreateRequest:
    """Body of ``POST /v1/reservations``. Unset optionals are left to the server's defaults."""

    idempotency_key: str
    subject: Subject
    action: Action
    estimate: Amount
    ttl_ms: int | None = None
    grace_period_ms: int | None = None
    overage_policy: OveragePolicy | None = None
    dry_run: bool | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class CommitRequest:
    """Body of ``POST /v1/reservations/{id}/commit``."""

    idempotency_key: str
    actual: Amount
    metrics: StandardMetrics | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class ReleaseRequest:
    """Body of ``POST /v1/reservations/{id}/release``."""

    idempotency_key: str
    reason: str | None = None


@final
@attrs.frozen(kw_only=True)
class ReservationExtendRequest:
    """Body of ``POST /v1/reservations/{id}/extend``."""

    idempotency_key: str
    extend_by_ms: int
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class EventCreateRequest:
    """Body of ``POST /v1/events``: spend recorded without a reservation."""

    idempotency_key: str
    subject: Subject
    action: Action
    actual: Amount
    overage_policy: OveragePolicy | None = None
    metrics: StandardMetrics | None = None
    client_time_ms: int | None = None
    metadata: JsonObject | None = None


# Responses ------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class DecisionResponse:
    """Answer of ``POST /v1/decide``."""

    decision: Decision
    caps: Caps | None = None
    reason_code: ReasonCode | UnknownReasonCode | None = None
    retry_after_ms: int | None = None
    affected_scopes: tuple[str, ...] | None = None
    cycles_evidence: EvidenceRef | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ReservationCreateResponse:
    """Answer of ``POST /v1/reservations`` (live or dry run)."""

    decision: Decision
    affected_scopes: tuple[str, ...]
    reservation_id: str | None = None
    reserved: Amount | None = None
    expires_at_ms: int | None = None
    remaining_ttl_ms: int | None = None
    scope_path: str | None = None
    caps: Caps | None = None
    balances: tuple[Balance, ...] | None = None
    reason_code: ReasonCode | UnknownReasonCode | None = None
    retry_after_ms: int | None = None
    cycles_evidence: EvidenceRef | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class Reservation:
    """A live reservation the server granted: what ``create_reservation`` returns.

    Unlike :class:`ReservationCreateResponse`, the fields a live grant must carry
    are not optional here.
    """

    reservation_id: str
    decision: Decision
    reserved: Amount
    expires_at_ms: int
    affected_scopes: tuple[str, ...]
    scope_path: str | None = None
    remaining_ttl_ms: int | None = None
    caps: Caps | None = None
    balances: tuple[Balance, ...] | None = None
    cycles_evidence: EvidenceRef | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class CommitResponse:
    """Answer of a commit: ``charged`` may be less than ``actual`` under ``ALLOW_IF_AVAILABLE``."""

    status: Literal["COMMITTED"]
    charged: Amount
    released: Amount | None = None
    balances: tuple[Balance, ...] | None = None
    cycles_evidence: EvidenceRef | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ReleaseResponse:
    """Answer of a release."""

    status: Literal["RELEASED"]
    released: Amount
    balances: tuple[Balance, ...] | None = None
    cycles_evidence: EvidenceRef | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ReservationExtendResponse:
    """Answer of an extend: the new authoritative ``expires_at_ms``."""

    status: Literal["ACTIVE"]
    expires_at_ms: int
    remaining_ttl_ms: int | None = None
    balances: tuple[Balance, ...] | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ReservationSummary:
    """One row of ``GET /v1/reservations``."""

    reservation_id: str
    status: ReservationStatus | UnknownReservationStatus
    subject: Subject
    action: Action
    reserved: Amount
    created_at_ms: int
    expires_at_ms: int
    scope_path: str
    affected_scopes: tuple[str, ...]
    idempotency_key: str | None = None
    finalized_at_ms: int | None = None
    committed: Amount | None = None
    metadata: JsonObject | None = None
    committed_metadata: JsonObject | None = None
    evidence: ReservationEvidence | None = None


@final
@attrs.frozen(kw_only=True)
class ReservationDetail:
    """Answer of ``GET /v1/reservations/{id}``."""

    reservation_id: str
    status: ReservationStatus | UnknownReservationStatus
    subject: Subject
    action: Action
    reserved: Amount
    created_at_ms: int
    expires_at_ms: int
    scope_path: str
    affected_scopes: tuple[str, ...]
    idempotency_key: str | None = None
    committed: Amount | None = None
    finalized_at_ms: int | None = None
    metadata: JsonObject | None = None
    committed_metadata: JsonObject | None = None
    evidence: ReservationEvidence | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ReservationListResponse:
    """One page of ``GET /v1/reservations``."""

    reservations: tuple[ReservationSummary, ...]
    next_cursor: str | None = None
    has_more: bool | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class BalanceResponse:
    """One page of ``GET /v1/balances``."""

    balances: tuple[Balance, ...]
    next_cursor: str | None = None
    has_more: bool | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class EventCreateResponse:
    """Answer of ``POST /v1/events`` (HTTP 201)."""

    status: Literal["APPLIED"]
    event_id: str
    charged: Amount | None = None
    balances: tuple[Balance, ...] | None = None
    meta: ResponseMeta | None = attrs.field(default=None, eq=False, repr=False)


@final
@attrs.frozen(kw_only=True)
class ErrorResponse:
    """The protocol's error envelope. ``error`` is kept as the server's string."""

    error: str
    message: str
    request_id: str
    trace_id: str | None = None
    details: JsonObject | None = None
    cycles_evidence: EvidenceRef | None = None


# Queries --------------------------------------------------------------------


class SortBy(enum.Enum):
    """Sort keys of ``GET /v1/reservations``."""

    RESERVATION_ID = "reservation_id"
    TENANT = "tenant"
    SCOPE_PATH = "scope_path"
    STATUS = "status"
    RESERVED = "reserved"
    CREATED_AT_MS = "created_at_ms"
    EXPIRES_AT_MS = "expires_at_ms"


class SortDirection(enum.Enum):
    """Sort direction of ``GET /v1/reservations``."""

    ASC = "asc"
    DESC = "desc"
