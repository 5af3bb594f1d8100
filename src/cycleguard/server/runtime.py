"""The runtime plane's operations, each one atomic function over a :class:`Tx`.

An operation reads the records it needs, asks the pure rules
(:mod:`~cycleguard.server.ledger`, :mod:`~cycleguard.server.policies`) what
happens, writes the result and returns a :class:`Reply` or a
:class:`Rejection`. Idempotency, tenancy and the closed-tenant guard are
decided here, in the same transaction as the change they protect.

Idempotency is per (tenant, endpoint, key). The reserve key space is shared
by dry runs and live reservations; commit and release keep their key on the
reservation; extend keys are per reservation. A replay returns the stored
body verbatim, with ``remaining_ttl_ms`` recomputed on reserve and extend.
Only successes are remembered.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, final

import attrs

from cycleguard._core._errors import ErrorCode
from cycleguard._core._models import (
    Amount,
    BalanceResponse,
    CommitRequest,
    CommitResponse,
    Decision,
    DecisionRequest,
    DecisionResponse,
    EventCreateRequest,
    EventCreateResponse,
    OveragePolicy,
    ReasonCode,
    ReleaseRequest,
    ReleaseResponse,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
    ReservationStatus,
    ReservationSummary,
    SortDirection,
    Subject,
    Unit,
    UnknownReasonCode,
)
from cycleguard._core._scopes import affected_scopes
from cycleguard._core._state import LeaseState
from cycleguard._core._wire import to_wire
from cycleguard.server import ledger
from cycleguard.server.auth import Principal, TenantPrincipal
from cycleguard.server.policies import Settings, resolve_settings, select_policy
from cycleguard.server.queries import (
    BalanceQuery,
    ReservationQuery,
    paginate,
    reservation_sort_key,
)
from cycleguard.server.records import (
    Budget,
    EventRecord,
    IdempotencyRecord,
    JsonText,
    PolicyRecord,
    Rejection,
    Reply,
    ReservationRecord,
    Tenant,
    TenantStatus,
    budget_key,
    canonical_json,
    compact_json,
    idempotency_key,
    json_text,
    rejection,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cycleguard._core._json import JsonObject, JsonValue
    from cycleguard.server.stores import Tx

__all__ = (
    "IDEMPOTENCY_TTL_MS",
    "SweepReport",
    "balances",
    "commit",
    "create_event",
    "create_reservation",
    "decide",
    "extend",
    "get_reservation",
    "list_reservations",
    "payload_hash",
    "release",
    "sweep",
)

IDEMPOTENCY_TTL_MS = 24 * 3_600_000
EVENT_IDEMPOTENCY_TTL_MS = 7 * 24 * 3_600_000
TENANT_SUSPENDED = "TENANT_SUSPENDED"


def canonical_digest(body: Mapping[str, object]) -> str:
    """SHA-256 of a request body's canonical JSON (sorted keys, no insignificant space).

    The one definition of "same payload" for idempotency. ``dry_run: false``
    counts as absent (it is the default).
    """
    if body.get("dry_run") is False:
        body = {name: value for name, value in body.items() if name != "dry_run"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def payload_hash(request: object) -> str:
    """:func:`canonical_digest` of a decoded request (its wire form, unset fields absent)."""
    return canonical_digest(to_wire(request))


# Shared steps ---------------------------------------------------------------


def _forbidden(message: str) -> Rejection:
    return rejection(ErrorCode.FORBIDDEN, message)


def _subject_tenant(principal: TenantPrincipal, subject: Subject) -> Rejection | None:
    if subject.tenant is not None and subject.tenant != principal.tenant_id:
        return _forbidden(f"subject.tenant {subject.tenant!r} is not the tenant of the API key")
    return None


def _tenant(tx: Tx, tenant_id: str) -> Tenant | Rejection:
    tenant = tx.get(Tenant, tenant_id)
    if tenant is None:
        return rejection(ErrorCode.INTERNAL_ERROR, f"tenant record {tenant_id!r} is missing")
    return tenant


def _closed_guard(tx: Tx, tenant_id: str) -> Rejection | None:
    tenant = _tenant(tx, tenant_id)
    if isinstance(tenant, Rejection):
        return tenant
    if tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(tenant_id)
    return None


def _tenant_closed(tenant_id: str) -> Rejection:
    return rejection(
        ErrorCode.TENANT_CLOSED, f"Tenant {tenant_id} is closed; owned objects are read-only"
    )


def _prior(
    tx: Tx, tenant_id: str, endpoint: str, key: str, digest: str
) -> IdempotencyRecord | Rejection | None:
    record = tx.get(IdempotencyRecord, idempotency_key(tenant_id, endpoint, key))
    if record is None:
        return None
    if record.payload_hash != digest:
        return rejection(
            ErrorCode.IDEMPOTENCY_MISMATCH,
            f"idempotency_key {key!r} was already used with a different payload",
        )
    return record


def _remember(
    tx: Tx,
    *,
    tenant_id: str,
    endpoint: str,
    key: str,
    digest: str,
    reply: Reply,
    now_ms: int,
    keep_ms: int,
    reservation_id: str | None = None,
) -> Reply:
    """Store ``reply`` as the answer to replay; it is answered as stored (:class:`JsonText`)."""
    body = json_text(reply.body)
    tx.put(
        IdempotencyRecord(
            tenant_id=tenant_id,
            endpoint=endpoint,
            key=key,
            payload_hash=digest,
            response=body,
            status_code=reply.status,
            created_at_ms=now_ms,
            expires_at_ms=now_ms + keep_ms,
            reservation_id=reservation_id,
        )
    )
    return Reply(status=reply.status, body=body, tenant=reply.tenant)


def _with_remaining_ttl(body: JsonObject, active: bool, now_ms: int) -> JsonObject:
    fields = dict(body.items())
    expires = fields.get("expires_at_ms")
    if not isinstance(expires, int):
        return body
    fields["remaining_ttl_ms"] = max(0, expires - now_ms) if active else 0
    return fields


def _budgets_at(tx: Tx, scopes: Sequence[str], unit: Unit) -> dict[str, Budget]:
    """What :func:`ledger.locate` needs: the budgets in ``unit`` at ``scopes`` or, when
    there are none, those in every unit (which tell a wrong unit from no budget)."""
    units: tuple[Unit, ...] = (unit,)
    while True:
        found: dict[str, Budget] = {}
        for scope in scopes:
            for wanted in units:
                key = budget_key(scope, wanted)
                budget = tx.get(Budget, key)
                if budget is not None:
                    found[key] = budget
        if found or len(units) > 1:
            return found
        units = tuple(Unit)


def _reservation_budgets(tx: Tx, reservation: ReservationRecord) -> tuple[Budget, ...]:
    unit = reservation.estimate.unit
    return tuple(
        budget
        for scope in reservation.budgeted_scopes
        if (budget := tx.get(Budget, budget_key(scope, unit))) is not None
    )


def _put_all(tx: Tx, budgets: Sequence[Budget]) -> None:
    for budget in budgets:
        tx.put(budget)


def _with_balances(response: object, budgets: Sequence[Budget]) -> JsonText:
    """The wire form of ``response`` with ``budgets`` as its ``balances``, encoded."""
    body: dict[str, JsonValue] = to_wire(response)
    body.pop("balances", None)
    head = compact_json(body)[:-1]
    balances = ",".join([ledger.balance_json(budget) for budget in budgets])
    return JsonText(f'{head}{"," if body else ""}"balances":[{balances}]}}')


def _reason(code: str) -> ReasonCode | UnknownReasonCode:
    try:
        return ReasonCode(code)
    except ValueError:
        return UnknownReasonCode(code)


# Evaluation shared by decide, dry run and reserve ----------------------------


@final
@attrs.frozen(kw_only=True)
class _Evaluation:
    scopes: tuple[str, ...]
    budgets: tuple[Budget, ...]
    settings: Settings
    refusal: Rejection | None
    reason: str | None

    @property
    def decision(self) -> Decision:
        if self.refusal is not None:
            return Decision.DENY
        return Decision.ALLOW_WITH_CAPS if self.settings.caps is not None else Decision.ALLOW


def _evaluate(
    tx: Tx,
    tenant: Tenant,
    subject: Subject,
    amount: Amount,
    now_ms: int,
    *,
    ttl_ms: int | None = None,
    grace_period_ms: int | None = None,
    overage_policy: OveragePolicy | None = None,
) -> _Evaluation | Rejection:
    """What a hold of ``amount`` for ``subject`` would meet; a wrong unit is a hard 400."""
    scopes = affected_scopes(subject)
    refusal: Rejection | None = None
    reason: str | None = None
    budgets: tuple[Budget, ...] = ()
    if tenant.status is TenantStatus.CLOSED:
        refusal, reason = _tenant_closed(tenant.tenant_id), ErrorCode.TENANT_CLOSED.value
    elif tenant.status is TenantStatus.SUSPENDED:
        refusal = _forbidden(
            f"Tenant {tenant.tenant_id} is suspended; new reservations are blocked"
        )
        reason = TENANT_SUSPENDED
    else:
        located = ledger.locate(scopes, amount.unit, _budgets_at(tx, scopes, amount.unit))
        if isinstance(located, Rejection):
            if located.error != ErrorCode.NOT_FOUND.value:
                return located
            refusal, reason = located, ReasonCode.BUDGET_NOT_FOUND.value
        else:
            budgets = located
            refusal = ledger.check_hold(budgets, amount.amount)
            reason = refusal.error if refusal is not None else None
    policy = select_policy(tx.scan(PolicyRecord, tenant.tenant_id), scopes, now_ms)
    settings = resolve_settings(
        tenant=tenant,
        policy=policy,
        leaf_budget=budgets[-1] if budgets else None,
        ttl_ms=ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=overage_policy,
    )
    return _Evaluation(
        scopes=scopes, budgets=budgets, settings=settings, refusal=refusal, reason=reason
    )


# Operations -----------------------------------------------------------------


def decide(
    tx: Tx, principal: TenantPrincipal, request: DecisionRequest, digest: str, now_ms: int
) -> Reply | Rejection:
    """``POST /v1/decide``: evaluate without holding; budget refusals are DENY, never 409."""
    tenant_id = principal.tenant_id
    refused = _subject_tenant(principal, request.subject)
    if refused is not None:
        return refused
    key = request.idempotency_key
    prior = _prior(tx, tenant_id, "decide", key, digest)
    if prior is not None:
        return prior if isinstance(prior, Rejection) else Reply(status=200, body=prior.response)
    tenant = _tenant(tx, tenant_id)
    if isinstance(tenant, Rejection):
        return tenant
    evaluation = _evaluate(tx, tenant, request.subject, request.estimate, now_ms)
    if isinstance(evaluation, Rejection):
        return evaluation
    decision = evaluation.decision
    response = DecisionResponse(
        decision=decision,
        caps=evaluation.settings.caps if decision is Decision.ALLOW_WITH_CAPS else None,
        reason_code=_reason(evaluation.reason) if evaluation.reason is not None else None,
        affected_scopes=evaluation.scopes,
    )
    reply = Reply(status=200, body=to_wire(response), tenant=tenant_id)
    return _remember(
        tx,
        tenant_id=tenant_id,
        endpoint="decide",
        key=key,
        digest=digest,
        reply=reply,
        now_ms=now_ms,
        keep_ms=IDEMPOTENCY_TTL_MS,
    )


def create_reservation(
    tx: Tx,
    principal: TenantPrincipal,
    request: ReservationCreateRequest,
    digest: str,
    now_ms: int,
    reservation_id: str,
) -> Reply | Rejection:
    """``POST /v1/reservations``: hold the estimate on every budgeted scope, or dry-run it."""
    tenant_id = principal.tenant_id
    refused = _subject_tenant(principal, request.subject)
    if refused is not None:
        return refused
    key = request.idempotency_key
    prior = _prior(tx, tenant_id, "reserve", key, digest)
    if isinstance(prior, Rejection):
        return prior
    if prior is not None:
        body: JsonObject = prior.response
        if prior.reservation_id is not None:
            held = tx.get(ReservationRecord, prior.reservation_id)
            active = held is not None and ledger.effective_state(held, now_ms) is LeaseState.ACTIVE
            body = _with_remaining_ttl(body, active, now_ms)
        return Reply(status=200, body=body, tenant=tenant_id)
    tenant = _tenant(tx, tenant_id)
    if isinstance(tenant, Rejection):
        return tenant
    estimate = request.estimate
    evaluation = _evaluate(
        tx,
        tenant,
        request.subject,
        estimate,
        now_ms,
        ttl_ms=request.ttl_ms,
        grace_period_ms=request.grace_period_ms,
        overage_policy=request.overage_policy,
    )
    if isinstance(evaluation, Rejection):
        return evaluation
    settings = evaluation.settings
    decision = evaluation.decision
    caps = settings.caps if decision is Decision.ALLOW_WITH_CAPS else None

    def remember(reply: Reply, keep_ms: int, reservation_id: str | None = None) -> Reply:
        return _remember(
            tx,
            tenant_id=tenant_id,
            endpoint="reserve",
            key=key,
            digest=digest,
            reply=reply,
            now_ms=now_ms,
            keep_ms=keep_ms,
            reservation_id=reservation_id,
        )

    if request.dry_run:
        if evaluation.refusal is not None:
            response = ReservationCreateResponse(
                decision=Decision.DENY,
                affected_scopes=evaluation.scopes,
                scope_path=evaluation.scopes[-1],
                reason_code=_reason(evaluation.reason or evaluation.refusal.error),
            )
        else:
            response = ReservationCreateResponse(
                decision=decision,
                affected_scopes=evaluation.scopes,
                reserved=estimate,
                scope_path=evaluation.scopes[-1],
                caps=caps,
            )
        body = (
            to_wire(response)
            if evaluation.refusal is not None
            else _with_balances(response, evaluation.budgets)
        )
        reply = Reply(status=200, body=body, tenant=tenant_id)
        return remember(reply, IDEMPOTENCY_TTL_MS)
    if evaluation.refusal is not None:
        return evaluation.refusal
    held_budgets = ledger.reserve_on(evaluation.budgets, estimate.amount, now_ms)
    record = ledger.new_reservation(
        reservation_id=reservation_id,
        tenant_id=tenant_id,
        subject=request.subject,
        action=request.action,
        estimate=estimate,
        scopes=evaluation.scopes,
        budgets=held_budgets,
        ttl_ms=settings.ttl_ms,
        grace_period_ms=settings.grace_period_ms,
        overage_policy=settings.overage_policy,
        max_extensions=settings.max_extensions,
        max_ttl_ms=settings.max_ttl_ms,
        idempotency_key=key,
        metadata=request.metadata,
        now_ms=now_ms,
    )
    response = ReservationCreateResponse(
        decision=decision,
        affected_scopes=evaluation.scopes,
        reservation_id=reservation_id,
        reserved=estimate,
        expires_at_ms=record.expires_at_ms,
        remaining_ttl_ms=settings.ttl_ms,
        scope_path=record.scope_path,
        caps=caps,
    )
    _put_all(tx, held_budgets)
    tx.put(record)
    reply = Reply(status=200, body=_with_balances(response, held_budgets), tenant=tenant_id)
    keep = max(settings.ttl_ms + settings.grace_period_ms, IDEMPOTENCY_TTL_MS)
    return remember(reply, keep, reservation_id)


def _owned(tx: Tx, principal: Principal, reservation_id: str) -> ReservationRecord | Rejection:
    reservation = tx.get(ReservationRecord, reservation_id)
    if reservation is None:
        return rejection(ErrorCode.NOT_FOUND, f"Reservation not found: {reservation_id}")
    if isinstance(principal, TenantPrincipal) and reservation.tenant_id != principal.tenant_id:
        return _forbidden("The reservation belongs to another tenant")
    return reservation


def _store_expiry(tx: Tx, expired: ledger.Expired) -> None:
    tx.put(expired.reservation)
    _put_all(tx, expired.budgets)


def commit(
    tx: Tx,
    principal: TenantPrincipal,
    reservation_id: str,
    request: CommitRequest,
    digest: str,
    now_ms: int,
) -> Reply | Rejection:
    """``POST /v1/reservations/{id}/commit``: settle the actual under the overage policy."""
    reservation = _owned(tx, principal, reservation_id)
    if isinstance(reservation, Rejection):
        return reservation
    tenant_id = reservation.tenant_id
    if reservation.commit_key == request.idempotency_key and reservation.commit_response:
        if reservation.commit_hash != digest:
            return rejection(
                ErrorCode.IDEMPOTENCY_MISMATCH,
                "this commit's idempotency_key was already used with a different payload",
            )
        return Reply(status=200, body=reservation.commit_response, tenant=tenant_id)
    closed = _closed_guard(tx, tenant_id)
    if closed is not None:
        return closed
    outcome = ledger.commit(
        reservation,
        _reservation_budgets(tx, reservation),
        actual=request.actual,
        metrics=request.metrics,
        metadata=request.metadata,
        now_ms=now_ms,
    )
    match outcome:
        case Rejection():
            return outcome
        case ledger.Lapsed(expired=expired, rejection=refusal):
            _store_expiry(tx, expired)
            return refusal
        case ledger.Settled():
            pass
    response = CommitResponse(
        status="COMMITTED",
        charged=outcome.charged,
        released=outcome.released,
    )
    body = _with_balances(response, outcome.budgets)
    tx.put(
        outcome.reservation(
            commit_key=request.idempotency_key, commit_hash=digest, commit_response=body
        )
    )
    _put_all(tx, outcome.budgets)
    return Reply(status=200, body=body, tenant=tenant_id)


def release(
    tx: Tx,
    principal: Principal,
    reservation_id: str,
    request: ReleaseRequest,
    digest: str,
    now_ms: int,
) -> Reply | Rejection:
    """``POST /v1/reservations/{id}/release``: return the whole hold (the admin key may too)."""
    reservation = _owned(tx, principal, reservation_id)
    if isinstance(reservation, Rejection):
        return reservation
    tenant_id = reservation.tenant_id
    if reservation.release_key == request.idempotency_key and reservation.release_response:
        if reservation.release_hash != digest:
            return rejection(
                ErrorCode.IDEMPOTENCY_MISMATCH,
                "this release's idempotency_key was already used with a different payload",
            )
        return Reply(status=200, body=reservation.release_response, tenant=tenant_id)
    closed = _closed_guard(tx, tenant_id)
    if closed is not None:
        return closed
    outcome = ledger.release(
        reservation,
        _reservation_budgets(tx, reservation),
        reason=request.reason,
        now_ms=now_ms,
    )
    match outcome:
        case Rejection():
            return outcome
        case ledger.Lapsed(expired=expired, rejection=refusal):
            _store_expiry(tx, expired)
            return refusal
        case ledger.Released():
            pass
    response = ReleaseResponse(status="RELEASED", released=reservation.estimate)
    body = _with_balances(response, outcome.budgets)
    tx.put(
        outcome.reservation(
            release_key=request.idempotency_key, release_hash=digest, release_response=body
        )
    )
    _put_all(tx, outcome.budgets)
    return Reply(status=200, body=body, tenant=tenant_id)


def extend(
    tx: Tx,
    principal: TenantPrincipal,
    reservation_id: str,
    request: ReservationExtendRequest,
    digest: str,
    now_ms: int,
) -> Reply | Rejection:
    """``POST /v1/reservations/{id}/extend``: move the expiry out (no grace for extend)."""
    reservation = _owned(tx, principal, reservation_id)
    if isinstance(reservation, Rejection):
        return reservation
    tenant_id = reservation.tenant_id
    endpoint = f"extend:{reservation_id}"
    prior = _prior(tx, tenant_id, endpoint, request.idempotency_key, digest)
    if isinstance(prior, Rejection):
        return prior
    if prior is not None:
        active = ledger.effective_state(reservation, now_ms) is LeaseState.ACTIVE
        body = _with_remaining_ttl(prior.response, active, now_ms)
        return Reply(status=200, body=body, tenant=tenant_id)
    closed = _closed_guard(tx, tenant_id)
    if closed is not None:
        return closed
    extended = ledger.extend(reservation, extend_by_ms=request.extend_by_ms, now_ms=now_ms)
    if isinstance(extended, Rejection):
        return extended
    response = ReservationExtendResponse(
        status="ACTIVE",
        expires_at_ms=extended.expires_at_ms,
        remaining_ttl_ms=extended.expires_at_ms - now_ms,
    )
    tx.put(extended)
    body = _with_balances(response, _reservation_budgets(tx, reservation))
    reply = Reply(status=200, body=body, tenant=tenant_id)
    keep = max(extended.expires_at_ms + extended.grace_period_ms - now_ms, IDEMPOTENCY_TTL_MS)
    return _remember(
        tx,
        tenant_id=tenant_id,
        endpoint=endpoint,
        key=request.idempotency_key,
        digest=digest,
        reply=reply,
        now_ms=now_ms,
        keep_ms=keep,
    )


def _status(state: LeaseState) -> ReservationStatus:
    return ReservationStatus(state.value)


def get_reservation(
    tx: Tx, principal: Principal, reservation_id: str, now_ms: int
) -> Reply | Rejection:
    """``GET /v1/reservations/{id}``: the detail; 410 once it has expired."""
    reservation = _owned(tx, principal, reservation_id)
    if isinstance(reservation, Rejection):
        return reservation
    state = ledger.effective_state(reservation, now_ms)
    if state is LeaseState.EXPIRED:
        return rejection(ErrorCode.RESERVATION_EXPIRED, "Reservation has expired")
    detail = ReservationDetail(
        reservation_id=reservation.reservation_id,
        status=_status(state),
        subject=reservation.subject,
        action=reservation.action,
        reserved=reservation.estimate,
        created_at_ms=reservation.created_at_ms,
        expires_at_ms=reservation.expires_at_ms,
        scope_path=reservation.scope_path,
        affected_scopes=reservation.affected_scopes,
        idempotency_key=reservation.idempotency_key,
        committed=reservation.charged if state is LeaseState.COMMITTED else None,
        finalized_at_ms=reservation.finalized_at_ms,
        metadata=reservation.metadata,
        committed_metadata=reservation.committed_metadata,
    )
    return Reply(status=200, body=to_wire(detail), tenant=reservation.tenant_id)


def list_reservations(
    tx: Tx, principal: Principal, query: ReservationQuery, now_ms: int
) -> Reply | Rejection:
    """``GET /v1/reservations``: the caller tenant's reservations, filtered and paged."""
    if isinstance(principal, TenantPrincipal):
        if query.tenant is not None and query.tenant != principal.tenant_id:
            return _forbidden("tenant filter is not the tenant of the API key")
        tenant_id = principal.tenant_id
    elif query.tenant is None:
        return rejection(
            ErrorCode.INVALID_REQUEST,
            "tenant query parameter is required when using admin key authentication",
        )
    else:
        tenant_id = query.tenant
    rows = [
        (reservation, state)
        for reservation in tx.scan(ReservationRecord, tenant_id)
        if query.matches(reservation, state := ledger.effective_state(reservation, now_ms))
    ]
    page = paginate(
        rows,
        key=lambda row: reservation_sort_key(query.sort_by, row[0], row[1]),
        descending=query.sort_dir is SortDirection.DESC,
        limit=query.limit,
        cursor=query.cursor,
        fingerprint=query.fingerprint(),
    )
    if isinstance(page, Rejection):
        return page
    summaries = tuple(_summary(reservation, state, query) for reservation, state in page.rows)
    response = ReservationListResponse(
        reservations=summaries,
        next_cursor=page.next_cursor,
        has_more=page.next_cursor is not None,
    )
    return Reply(status=200, body=to_wire(response), tenant=tenant_id)


def _summary(
    reservation: ReservationRecord, state: LeaseState, query: ReservationQuery
) -> ReservationSummary:
    finalized = state in (LeaseState.COMMITTED, LeaseState.RELEASED)
    return ReservationSummary(
        reservation_id=reservation.reservation_id,
        status=_status(state),
        subject=reservation.subject,
        action=reservation.action,
        reserved=reservation.estimate,
        created_at_ms=reservation.created_at_ms,
        expires_at_ms=reservation.expires_at_ms,
        scope_path=reservation.scope_path,
        affected_scopes=reservation.affected_scopes,
        idempotency_key=reservation.idempotency_key,
        finalized_at_ms=reservation.finalized_at_ms if finalized else None,
        committed=reservation.charged if state is LeaseState.COMMITTED else None,
        metadata=reservation.metadata if "metadata" in query.include else None,
        committed_metadata=(
            reservation.committed_metadata if "committed_metadata" in query.include else None
        ),
    )


def balances(tx: Tx, principal: TenantPrincipal, query: BalanceQuery) -> Reply | Rejection:
    """``GET /v1/balances``: the caller tenant's budgets whose path has every filter segment."""
    if query.tenant is not None and query.tenant != principal.tenant_id:
        return _forbidden("tenant filter is not the tenant of the API key")
    wanted = {f"{level}:{value}" for level, value in query.filters}
    rows = [
        budget
        for budget in tx.scan(Budget, principal.tenant_id)
        if wanted <= set(budget.scope.split("/"))
    ]
    page = paginate(
        rows,
        key=lambda budget: (budget.scope, budget.unit.value),
        descending=False,
        limit=query.limit,
        cursor=query.cursor,
        fingerprint=hashlib.sha256(repr(sorted(wanted)).encode()).hexdigest()[:16],
    )
    if isinstance(page, Rejection):
        return page
    response = BalanceResponse(
        balances=(), next_cursor=page.next_cursor, has_more=page.next_cursor is not None
    )
    return Reply(status=200, body=_with_balances(response, page.rows), tenant=principal.tenant_id)


def create_event(
    tx: Tx,
    principal: TenantPrincipal,
    request: EventCreateRequest,
    digest: str,
    now_ms: int,
    event_id: str,
) -> Reply | Rejection:
    """``POST /v1/events``: charge spend that had no reservation, atomically on every scope."""
    tenant_id = principal.tenant_id
    refused = _subject_tenant(principal, request.subject)
    if refused is not None:
        return refused
    key = request.idempotency_key
    prior = _prior(tx, tenant_id, "event", key, digest)
    if prior is not None:
        if isinstance(prior, Rejection):
            return prior
        return Reply(status=201, body=prior.response, tenant=tenant_id)
    tenant = _tenant(tx, tenant_id)
    if isinstance(tenant, Rejection):
        return tenant
    if tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(tenant_id)
    scopes = affected_scopes(request.subject)
    actual = request.actual
    located = ledger.locate(scopes, actual.unit, _budgets_at(tx, scopes, actual.unit))
    if isinstance(located, Rejection):
        return located
    closed = ledger.check_open(located)
    if closed is not None:
        return closed
    policy = select_policy(tx.scan(PolicyRecord, tenant_id), scopes, now_ms)
    overage = resolve_settings(
        tenant=tenant, policy=policy, leaf_budget=located[-1], overage_policy=request.overage_policy
    ).overage_policy
    if overage is OveragePolicy.REJECT:
        short = next((budget for budget in located if budget.remaining < actual.amount), None)
        if short is not None:
            return rejection(
                ErrorCode.BUDGET_EXCEEDED,
                f"Budget exceeded for scope {short.scope}: remaining {short.remaining}, "
                f"actual {actual.amount}, overage policy REJECT",
            )
    settlement = ledger.settle(located, held=0, actual=actual.amount, policy=overage, now_ms=now_ms)
    if isinstance(settlement, Rejection):
        return settlement
    charged = Amount(actual.unit, settlement.charged)
    tx.put(
        EventRecord(
            event_id=event_id,
            tenant_id=tenant_id,
            subject=request.subject,
            action=request.action,
            actual=actual,
            charged=charged,
            overage_policy=overage,
            scope_path=scopes[-1],
            budgeted_scopes=tuple(budget.scope for budget in located),
            idempotency_key=key,
            created_at_ms=now_ms,
            debt_incurred=settlement.debt_incurred,
            metrics=request.metrics,
            client_time_ms=request.client_time_ms,
            metadata=request.metadata,
        )
    )
    _put_all(tx, settlement.budgets)
    response = EventCreateResponse(
        status="APPLIED",
        event_id=event_id,
        charged=charged if settlement.charged < actual.amount else None,
    )
    reply = Reply(status=201, body=_with_balances(response, settlement.budgets), tenant=tenant_id)
    return _remember(
        tx,
        tenant_id=tenant_id,
        endpoint="event",
        key=key,
        digest=digest,
        reply=reply,
        now_ms=now_ms,
        keep_ms=EVENT_IDEMPOTENCY_TTL_MS,
    )


@final
@attrs.frozen
class SweepReport:
    """What one sweep did."""

    expired: int
    purged: int
    """Idempotency records past their retention, removed."""
    removed: int = 0
    """Finished reservations past :data:`~cycleguard.server.records.RESERVATION_RETENTION_MS`,
    removed."""


def sweep(tx: Tx, now_ms: int, limit: int = 1_000) -> SweepReport:
    """Expire reservations past their grace period (returning their holds), remove
    finished reservations and purge idempotency records past their retention."""
    expired = removed = 0
    for reservation in tx.due(ReservationRecord, now_ms - 1, limit):
        if reservation.state is not LeaseState.ACTIVE:
            tx.delete(ReservationRecord, reservation.store_key)
            removed += 1
            continue
        outcome = ledger.expire(reservation, _reservation_budgets(tx, reservation), now_ms)
        if outcome is not None:
            _store_expiry(tx, outcome)
            expired += 1
    stale = tx.due(IdempotencyRecord, now_ms - 1, limit)
    for record in stale:
        tx.delete(IdempotencyRecord, record.store_key)
    return SweepReport(expired=expired, purged=len(stale), removed=removed)
