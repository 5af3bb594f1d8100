"""The admin plane's operations, each one atomic function over a :class:`Tx`.

Tenants and API keys need the admin key. Budgets and policies also accept a
tenant key acting on its own tenant (``tenant_id`` then comes from the key and
must not be in the body); the admin key names the tenant explicitly.

Closing a tenant is one transaction (the spec's "Mode A" cascade): its open
reservations are released, its budgets closed, its keys revoked, and then its
status flips to CLOSED. Afterwards every mutation of something it owns
answers 409 ``TENANT_CLOSED``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, TypeVar

import attrs

from cycleguard._core._models import Amount, SignedAmount, Unit
from cycleguard._core._state import LeaseState
from cycleguard._core._wire import to_wire
from cycleguard.server import ledger
from cycleguard.server.admin_models import (
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    BudgetFundingRequest,
    BudgetStatusTransitionRequest,
    BudgetUpdateRequest,
    PolicyCreateRequest,
    PolicyUpdateRequest,
    TenantCreateRequest,
    TenantUpdateRequest,
)
from cycleguard.server.auth import (
    DEFAULT_PERMISSIONS,
    AdminPrincipal,
    Principal,
    TenantPrincipal,
    capabilities,
    hash_secret,
    key_prefix,
)
from cycleguard.server.clock import format_ms, parse_datetime_ms
from cycleguard.server.policies import normalize_pattern, normalize_scope
from cycleguard.server.queries import paginate, parse_limit
from cycleguard.server.records import (
    ApiKeyRecord,
    Budget,
    BudgetStatus,
    IdempotencyRecord,
    KeyHash,
    KeyStatus,
    PolicyRecord,
    Rejection,
    Reply,
    ReservationRecord,
    Tenant,
    TenantStatus,
    budget_key,
    idempotency_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cycleguard._core._json import JsonObject, JsonValue
    from cycleguard.server.stores import Tx

__all__ = (
    "KEY_LIFETIME_MS",
    "budget_view",
    "close_tenant",
    "create_api_key",
    "create_budget",
    "create_policy",
    "create_tenant",
    "freeze_budget",
    "fund_budget",
    "get_tenant",
    "introspect",
    "key_view",
    "list_api_keys",
    "list_budgets",
    "list_policies",
    "list_tenants",
    "lookup_budget",
    "policy_view",
    "revoke_api_key",
    "tenant_view",
    "update_budget",
    "update_policy",
    "update_tenant",
)

T = TypeVar("T")

KEY_LIFETIME_MS = 90 * 24 * 3_600_000
ADMIN_LIST_LIMIT = (1, 100)
FUND_IDEMPOTENCY_TTL_MS = 24 * 3_600_000


def problem(status: int, error: str, message: str) -> Rejection:
    """An admin-plane refusal (admin ``ErrorCode`` values)."""
    return Rejection(status=status, error=error, message=message)


def _bad(message: str) -> Rejection:
    return problem(400, "INVALID_REQUEST", message)


def _tenant_closed(tenant_id: str) -> Rejection:
    return problem(
        409, "TENANT_CLOSED", f"Tenant {tenant_id} is closed; owned objects are read-only"
    )


def _tenant_missing(tenant_id: str, status: int = 404) -> Rejection:
    return problem(status, "TENANT_NOT_FOUND", f"Tenant not found: {tenant_id}")


def _budget_missing(scope: str, unit: Unit) -> Rejection:
    return problem(404, "BUDGET_NOT_FOUND", f"Budget not found: {scope} ({unit.value})")


def _opt(view: dict[str, JsonValue], name: str, value: JsonValue) -> None:
    if value is not None:
        view[name] = value


def _keep(new: T | None, old: T) -> T:
    return old if new is None else new


# Views ------------------------------------------------------------------------


def tenant_view(tenant: Tenant) -> JsonObject:
    """A tenant as the ``Tenant`` schema shows it."""
    view: dict[str, JsonValue] = {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "status": tenant.status.value,
        "created_at": format_ms(tenant.created_at_ms),
    }
    for name, ms in (
        ("updated_at", tenant.updated_at_ms),
        ("suspended_at", tenant.suspended_at_ms),
        ("closed_at", tenant.closed_at_ms),
    ):
        _opt(view, name, format_ms(ms) if ms is not None else None)
    _opt(view, "parent_tenant_id", tenant.parent_tenant_id)
    _opt(view, "metadata", dict(tenant.metadata) if tenant.metadata is not None else None)
    policy = tenant.default_commit_overage_policy
    _opt(view, "default_commit_overage_policy", policy.value if policy else None)
    _opt(view, "default_reservation_ttl_ms", tenant.default_reservation_ttl_ms)
    _opt(view, "max_reservation_ttl_ms", tenant.max_reservation_ttl_ms)
    _opt(view, "max_reservation_extensions", tenant.max_reservation_extensions)
    _opt(view, "reservation_expiry_policy", tenant.reservation_expiry_policy)
    return view


def key_view(key: ApiKeyRecord, now_ms: int) -> JsonObject:
    """An API key as the ``ApiKey`` schema shows it: never the secret or its hash."""
    view: dict[str, JsonValue] = {
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "key_prefix": key.key_prefix,
        "name": key.name,
        "permissions": list(key.permissions),
        "status": key.effective_status(now_ms).value,
        "created_at": format_ms(key.created_at_ms),
        "expires_at": format_ms(key.expires_at_ms),
    }
    _opt(view, "scope_filter", list(key.scope_filter) if key.scope_filter is not None else None)
    _opt(view, "revoked_at", format_ms(key.revoked_at_ms) if key.revoked_at_ms else None)
    _opt(view, "revoked_reason", key.revoked_reason)
    _opt(view, "metadata", key.metadata)
    return view


def budget_view(budget: Budget) -> JsonObject:
    """A budget as the ``BudgetLedger`` schema shows it."""
    unit = budget.unit
    view: dict[str, JsonValue] = {
        "ledger_id": budget.ledger_id,
        "scope": budget.scope,
        "scope_path": budget.scope,
        "unit": unit.value,
        "tenant_id": budget.tenant_id,
        "allocated": to_wire(Amount(unit, budget.allocated)),
        "remaining": to_wire(SignedAmount(unit, budget.remaining)),
        "reserved": to_wire(Amount(unit, budget.reserved)),
        "spent": to_wire(Amount(unit, budget.spent)),
        "debt": to_wire(Amount(unit, budget.debt)),
        "overdraft_limit": to_wire(Amount(unit, budget.overdraft_limit)),
        "is_over_limit": budget.is_over_limit,
        "status": budget.status.value,
        "created_at": format_ms(budget.created_at_ms),
    }
    policy = budget.commit_overage_policy
    _opt(view, "commit_overage_policy", policy.value if policy else None)
    rollover = budget.rollover_policy
    _opt(view, "rollover_policy", rollover.value if rollover else None)
    for name, ms in (
        ("period_start", budget.period_start_ms),
        ("period_end", budget.period_end_ms),
        ("updated_at", budget.updated_at_ms),
    ):
        _opt(view, name, format_ms(ms) if ms is not None else None)
    return view


def policy_view(policy: PolicyRecord) -> JsonObject:
    """A policy as the ``Policy`` schema shows it."""
    view: dict[str, JsonValue] = {
        "policy_id": policy.policy_id,
        "name": policy.name,
        "scope_pattern": policy.scope_pattern,
        "priority": policy.priority,
        "status": policy.status.value,
        "created_at": format_ms(policy.created_at_ms),
    }
    _opt(view, "caps", to_wire(policy.caps) if policy.caps is not None else None)
    overage = policy.commit_overage_policy
    _opt(view, "commit_overage_policy", overage.value if overage else None)
    override = policy.reservation_ttl_override
    _opt(view, "reservation_ttl_override", to_wire(override) if override is not None else None)
    _opt(view, "rate_limits", policy.rate_limits)
    for name, ms in (
        ("effective_from", policy.effective_from_ms),
        ("effective_until", policy.effective_until_ms),
        ("updated_at", policy.updated_at_ms),
    ):
        _opt(view, name, format_ms(ms) if ms is not None else None)
    return view


def _list_reply(name: str, rows: list[JsonObject], next_cursor: str | None) -> Reply:
    body: dict[str, JsonValue] = {name: rows, "has_more": next_cursor is not None}
    _opt(body, "next_cursor", next_cursor)
    return Reply(status=200, body=body)


def _params_limit(params: Mapping[str, str]) -> int | Rejection:
    return parse_limit(params, bounds=ADMIN_LIST_LIMIT)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


# Tenants ------------------------------------------------------------------------


def create_tenant(tx: Tx, request: TenantCreateRequest, now_ms: int) -> Reply | Rejection:
    """Create a tenant (201), or answer 200 with the one that already has this id."""
    existing = tx.get(Tenant, request.tenant_id)
    if existing is not None:
        return Reply(status=200, body=tenant_view(existing))
    if request.parent_tenant_id is not None and tx.get(Tenant, request.parent_tenant_id) is None:
        return _tenant_missing(request.parent_tenant_id, 400)
    tenant = Tenant(
        tenant_id=request.tenant_id,
        name=request.name,
        created_at_ms=now_ms,
        parent_tenant_id=request.parent_tenant_id,
        metadata=request.metadata,
        default_commit_overage_policy=request.default_commit_overage_policy,
        default_reservation_ttl_ms=request.default_reservation_ttl_ms,
        max_reservation_ttl_ms=request.max_reservation_ttl_ms,
        max_reservation_extensions=request.max_reservation_extensions,
        reservation_expiry_policy=(
            request.reservation_expiry_policy.value if request.reservation_expiry_policy else None
        ),
    )
    tx.put(tenant)
    return Reply(status=201, body=tenant_view(tenant))


def get_tenant(tx: Tx, tenant_id: str) -> Reply | Rejection:
    """One tenant."""
    tenant = tx.get(Tenant, tenant_id)
    if tenant is None:
        return _tenant_missing(tenant_id)
    return Reply(status=200, body=tenant_view(tenant))


def list_tenants(tx: Tx, params: Mapping[str, str]) -> Reply | Rejection:
    """Tenants, newest first unless ``sort_by``/``sort_dir`` say otherwise."""
    limit = _params_limit(params)
    if isinstance(limit, Rejection):
        return limit
    status = params.get("status") or None
    parent = params.get("parent_tenant_id") or None
    search = (params.get("search") or "").lower()
    if len(search) > 128:
        return _bad("search must be at most 128 characters")
    sort_by = params.get("sort_by") or "created_at"
    if sort_by not in {"tenant_id", "name", "status", "created_at"}:
        return _bad(f"sort_by must be tenant_id, name, status or created_at, got {sort_by!r}")
    sort_dir = params.get("sort_dir") or "desc"
    if sort_dir not in {"asc", "desc"}:
        return _bad(f"sort_dir must be asc or desc, got {sort_dir!r}")
    rows = [
        tenant
        for tenant in tx.scan(Tenant)
        if (status is None or tenant.status.value == status)
        and (parent is None or tenant.parent_tenant_id == parent)
        and (not search or search in tenant.tenant_id or search in tenant.name.lower())
    ]

    def key(tenant: Tenant) -> tuple[int | str, str]:
        value: int | str = (
            tenant.created_at_ms if sort_by == "created_at" else str(getattr(tenant, sort_by))
        )
        if sort_by == "status":
            value = tenant.status.value
        return value, tenant.tenant_id

    page = paginate(
        rows,
        key=key,
        descending=sort_dir == "desc",
        limit=limit,
        cursor=params.get("cursor") or None,
        fingerprint=_fingerprint(status, parent, search, sort_by, sort_dir),
    )
    if isinstance(page, Rejection):
        return page
    return _list_reply("tenants", [tenant_view(t) for t in page.rows], page.next_cursor)


def update_tenant(
    tx: Tx, tenant_id: str, request: TenantUpdateRequest, now_ms: int
) -> Reply | Rejection:
    """Change a tenant's name, settings or status; CLOSED runs the close cascade."""
    tenant = tx.get(Tenant, tenant_id)
    if tenant is None:
        return _tenant_missing(tenant_id)
    if tenant.status is TenantStatus.CLOSED:
        if request == TenantUpdateRequest(status=TenantStatus.CLOSED):
            return Reply(status=200, body=tenant_view(tenant))
        # updateTenant declares no 409: a closed tenant is final, so this is a bad request.
        return _bad(f"Tenant {tenant_id} is closed; CLOSED is final and it cannot change")
    updated = attrs.evolve(
        tenant,
        updated_at_ms=now_ms,
        name=_keep(request.name, tenant.name),
        metadata=_keep(request.metadata, tenant.metadata),
        default_commit_overage_policy=_keep(
            request.default_commit_overage_policy, tenant.default_commit_overage_policy
        ),
        default_reservation_ttl_ms=_keep(
            request.default_reservation_ttl_ms, tenant.default_reservation_ttl_ms
        ),
        max_reservation_ttl_ms=_keep(request.max_reservation_ttl_ms, tenant.max_reservation_ttl_ms),
        max_reservation_extensions=_keep(
            request.max_reservation_extensions, tenant.max_reservation_extensions
        ),
    )
    match request.status:
        case TenantStatus.SUSPENDED if tenant.status is not TenantStatus.SUSPENDED:
            updated = attrs.evolve(updated, status=TenantStatus.SUSPENDED, suspended_at_ms=now_ms)
        case TenantStatus.ACTIVE:
            updated = attrs.evolve(updated, status=TenantStatus.ACTIVE, suspended_at_ms=None)
        case TenantStatus.CLOSED:
            updated = close_tenant(tx, updated, now_ms)
        case _:
            pass
    tx.put(updated)
    return Reply(status=200, body=tenant_view(updated))


def close_tenant(tx: Tx, tenant: Tenant, now_ms: int) -> Tenant:
    """The close cascade: release open reservations, close budgets, revoke keys, flip status."""
    for reservation in tx.scan(ReservationRecord, tenant.tenant_id):
        if reservation.state is not LeaseState.ACTIVE:
            continue
        budgets: tuple[Budget, ...] = tuple(
            budget
            for scope in reservation.budgeted_scopes
            if (budget := tx.get(Budget, budget_key(scope, reservation.estimate.unit)))
        )
        outcome = ledger.release(reservation, budgets, reason="tenant_closed", now_ms=now_ms)
        if isinstance(outcome, ledger.Released):
            tx.put(outcome.reservation())
            for budget in outcome.budgets:
                tx.put(budget)
        elif isinstance(outcome, ledger.Lapsed):
            tx.put(outcome.expired.reservation)
            for budget in outcome.expired.budgets:
                tx.put(budget)
    for budget in tx.scan(Budget, tenant.tenant_id):
        if budget.status is not BudgetStatus.CLOSED:
            tx.put(attrs.evolve(budget, status=BudgetStatus.CLOSED, updated_at_ms=now_ms))
    for key in tx.scan(ApiKeyRecord, tenant.tenant_id):
        if key.status is KeyStatus.ACTIVE:
            tx.put(
                attrs.evolve(
                    key,
                    status=KeyStatus.REVOKED,
                    revoked_at_ms=now_ms,
                    revoked_reason="tenant_closed",
                )
            )
    return attrs.evolve(tenant, status=TenantStatus.CLOSED, closed_at_ms=now_ms)


# API keys -----------------------------------------------------------------------


def create_api_key(
    tx: Tx, request: ApiKeyCreateRequest, now_ms: int, key_id: str, secret: str
) -> Reply | Rejection:
    """Mint a key for a tenant; the secret is in this response only."""
    tenant = tx.get(Tenant, request.tenant_id)
    if tenant is None:
        return _tenant_missing(request.tenant_id, 400)
    if tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(request.tenant_id)
    expires_at = now_ms + KEY_LIFETIME_MS
    if request.expires_at is not None:
        parsed = parse_datetime_ms(request.expires_at)
        if parsed is None or parsed <= now_ms:
            return _bad("expires_at must be a date-time in the future")
        expires_at = parsed
    secret_hash = hash_secret(secret)
    key = ApiKeyRecord(
        key_id=key_id,
        tenant_id=request.tenant_id,
        key_prefix=key_prefix(secret),
        secret_hash=secret_hash,
        name=request.name,
        permissions=request.permissions if request.permissions is not None else DEFAULT_PERMISSIONS,
        scope_filter=request.scope_filter,
        created_at_ms=now_ms,
        expires_at_ms=expires_at,
        metadata=request.metadata,
    )
    tx.put(key)
    tx.put(KeyHash(secret_hash=secret_hash, key_id=key_id))
    body: dict[str, JsonValue] = {
        "key_id": key.key_id,
        "key_secret": secret,
        "key_prefix": key.key_prefix,
        "tenant_id": key.tenant_id,
        "permissions": list(key.permissions),
        "created_at": format_ms(key.created_at_ms),
        "expires_at": format_ms(key.expires_at_ms),
    }
    return Reply(status=201, body=body)


def list_api_keys(tx: Tx, params: Mapping[str, str], now_ms: int) -> Reply | Rejection:
    """Keys (optionally of one tenant or status), newest first."""
    limit = _params_limit(params)
    if isinstance(limit, Rejection):
        return limit
    tenant_id = params.get("tenant_id") or None
    status = params.get("status") or None
    if status is not None and status not in {"ACTIVE", "REVOKED", "EXPIRED"}:
        return _bad(f"status must be ACTIVE, REVOKED or EXPIRED, got {status!r}")
    rows = [
        key
        for key in tx.scan(ApiKeyRecord, tenant_id)
        if status is None or key.effective_status(now_ms).value == status
    ]
    page = paginate(
        rows,
        key=lambda key: (key.created_at_ms, key.key_id),
        descending=True,
        limit=limit,
        cursor=params.get("cursor") or None,
        fingerprint=_fingerprint(tenant_id, status),
    )
    if isinstance(page, Rejection):
        return page
    return _list_reply("keys", [key_view(k, now_ms) for k in page.rows], page.next_cursor)


def revoke_api_key(tx: Tx, key_id: str, reason: str | None, now_ms: int) -> Reply | Rejection:
    """Revoke a key at once: its next call gets 401."""
    key = tx.get(ApiKeyRecord, key_id)
    if key is None:
        return problem(404, "NOT_FOUND", f"API key not found: {key_id}")
    if reason is not None and len(reason) > 512:
        return _bad("reason must be at most 512 characters")
    if key.status is KeyStatus.REVOKED:
        return problem(409, "KEY_REVOKED", f"API key {key_id} is already revoked")
    revoked = attrs.evolve(
        key, status=KeyStatus.REVOKED, revoked_at_ms=now_ms, revoked_reason=reason
    )
    tx.put(revoked)
    return Reply(status=200, body=key_view(revoked, now_ms))


# Budgets ------------------------------------------------------------------------


def _acting_tenant(
    tx: Tx, principal: Principal, named: str | None, what: str
) -> Tenant | Rejection:
    """The tenant an operation acts for: the key's, or the one the admin names."""
    if isinstance(principal, TenantPrincipal):
        if named is not None and named != principal.tenant_id:
            return _bad(f"tenant_id must not be sent with a tenant API key ({what})")
        tenant_id = principal.tenant_id
    elif named is None:
        return _bad(f"tenant_id is required with the admin key ({what})")
    else:
        tenant_id = named
    tenant = tx.get(Tenant, tenant_id)
    if tenant is None:
        return _tenant_missing(tenant_id, 400)
    return tenant


def create_budget(
    tx: Tx, principal: Principal, request: BudgetCreateRequest, now_ms: int, ledger_id: str
) -> Reply | Rejection:
    """Open a ledger for ``(scope, unit)`` under the acting tenant's ``tenant:<id>`` scope."""
    if isinstance(principal, TenantPrincipal) and request.tenant_id is not None:
        return _bad("tenant_id must not be sent with a tenant API key")
    tenant = _acting_tenant(tx, principal, request.tenant_id, "createBudget")
    if isinstance(tenant, Rejection):
        return tenant
    if tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(tenant.tenant_id)
    if tenant.status is TenantStatus.SUSPENDED:
        return problem(409, "TENANT_SUSPENDED", f"Tenant {tenant.tenant_id} is suspended")
    scope = normalize_scope(request.scope)
    root = f"tenant:{tenant.tenant_id}"
    if scope is None or (scope != root and not scope.startswith(root + "/")):
        return _bad(
            f"scope must be a canonical scope path under {root!r} "
            f"(levels tenant/workspace/app/workflow/agent/toolset), got {request.scope!r}"
        )
    if tx.get(Budget, budget_key(scope, request.unit)) is not None:
        return problem(
            409, "DUPLICATE_RESOURCE", f"A budget for {scope} in {request.unit.value} exists"
        )
    limit = request.overdraft_limit.amount if request.overdraft_limit is not None else 0
    budget = Budget(
        scope=scope,
        unit=request.unit,
        tenant_id=tenant.tenant_id,
        ledger_id=ledger_id,
        allocated=request.allocated.amount,
        remaining=request.allocated.amount,
        overdraft_limit=limit,
        commit_overage_policy=request.commit_overage_policy,
        rollover_policy=request.rollover_policy,
        period_start_ms=parse_datetime_ms(request.period_start) if request.period_start else None,
        period_end_ms=parse_datetime_ms(request.period_end) if request.period_end else None,
        metadata=request.metadata,
        created_at_ms=now_ms,
    )
    tx.put(budget)
    return Reply(status=201, body=budget_view(budget))


def _parse_unit(params: Mapping[str, str]) -> Unit | Rejection:
    text = params.get("unit") or ""
    try:
        return Unit(text)
    except ValueError:
        return _bad(f"unit must be one of {', '.join(u.value for u in Unit)}, got {text!r}")


def _addressed_budget(
    tx: Tx, principal: Principal, params: Mapping[str, str], *, admin_tenant: bool = False
) -> Budget | Rejection:
    """The budget named by ``?scope=&unit=``, if the caller may see it."""
    unit = _parse_unit(params)
    if isinstance(unit, Rejection):
        return unit
    raw_scope = params.get("scope") or ""
    scope = normalize_scope(raw_scope)
    if scope is None:
        return _bad(f"scope must be a canonical scope path, got {raw_scope!r}")
    owner: str | None = None
    if isinstance(principal, TenantPrincipal):
        owner = principal.tenant_id
    elif admin_tenant:
        owner = params.get("tenant_id") or None
        if owner is None:
            return _bad("tenant_id query parameter is required with the admin key")
    if owner is not None and scope.split("/", 1)[0] != f"tenant:{owner}":
        return problem(403, "FORBIDDEN", "The budget belongs to another tenant")
    budget = tx.get(Budget, budget_key(scope, unit))
    if budget is None or (owner is not None and budget.tenant_id != owner):
        return _budget_missing(scope, unit)
    return budget


def lookup_budget(tx: Tx, principal: Principal, params: Mapping[str, str]) -> Reply | Rejection:
    """One budget by exact scope and unit."""
    budget = _addressed_budget(tx, principal, params)
    if isinstance(budget, Rejection):
        return budget
    return Reply(status=200, body=budget_view(budget))


def list_budgets(tx: Tx, principal: Principal, params: Mapping[str, str]) -> Reply | Rejection:
    """Budgets of the caller's tenant (or, for the admin, of one or every tenant)."""
    limit = _params_limit(params)
    if isinstance(limit, Rejection):
        return limit
    tenant_id = (
        principal.tenant_id
        if isinstance(principal, TenantPrincipal)
        else params.get("tenant_id") or None
    )
    prefix = (params.get("scope_prefix") or "").lower()
    unit = params.get("unit") or None
    status = params.get("status") or None
    flags: dict[str, bool | None] = {}
    for name in ("over_limit", "has_debt"):
        text = params.get(name) or None
        if text is not None and text not in {"true", "false"}:
            return _bad(f"{name} must be true or false, got {text!r}")
        flags[name] = None if text is None else text == "true"
    bounds: list[float | None] = []
    for name in ("utilization_min", "utilization_max"):
        text = params.get(name) or None
        try:
            value = None if text is None else float(text)
        except ValueError:
            return _bad(f"{name} must be a number between 0 and 1, got {text!r}")
        if value is not None and not 0 <= value <= 1:
            return _bad(f"{name} must be between 0 and 1, got {text!r}")
        bounds.append(value)
    low, high = bounds
    if low is not None and high is not None and low > high:
        return _bad("utilization_min must not exceed utilization_max")

    def utilization(budget: Budget) -> float:
        return budget.spent / budget.allocated if budget.allocated > 0 else 0.0

    rows = [
        budget
        for budget in tx.scan(Budget, tenant_id)
        if budget.scope.startswith(prefix)
        and (unit is None or budget.unit.value == unit)
        and (status is None or budget.status.value == status)
        and (flags["over_limit"] is None or budget.is_over_limit is flags["over_limit"])
        and (flags["has_debt"] is None or (budget.debt > 0) is flags["has_debt"])
        and (low is None or utilization(budget) >= low)
        and (high is None or utilization(budget) <= high)
    ]
    page = paginate(
        rows,
        key=lambda budget: (budget.scope, budget.unit.value),
        descending=False,
        limit=limit,
        cursor=params.get("cursor") or None,
        fingerprint=_fingerprint(tenant_id, prefix, unit, status, flags, bounds),
    )
    if isinstance(page, Rejection):
        return page
    return _list_reply("ledgers", [budget_view(b) for b in page.rows], page.next_cursor)


def _open_owner(tx: Tx, budget: Budget) -> Rejection | None:
    tenant = tx.get(Tenant, budget.tenant_id)
    if tenant is not None and tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(budget.tenant_id)
    return None


def update_budget(
    tx: Tx, params: Mapping[str, str], request: BudgetUpdateRequest, now_ms: int
) -> Reply | Rejection:
    """Change ``overdraft_limit``, ``commit_overage_policy`` or metadata; recompute over-limit."""
    budget = _addressed_budget(tx, AdminPrincipal(), params)
    if isinstance(budget, Rejection):
        return budget
    refused = _open_owner(tx, budget)
    if refused is not None:
        return refused
    if budget.status is BudgetStatus.CLOSED:
        return problem(409, "BUDGET_CLOSED", f"Budget is closed for scope: {budget.scope}")
    limit = request.overdraft_limit
    if limit is not None and limit.unit is not budget.unit:
        return problem(400, "UNIT_MISMATCH", f"overdraft_limit.unit must be {budget.unit.value}")
    updated = attrs.evolve(
        budget,
        overdraft_limit=limit.amount if limit is not None else budget.overdraft_limit,
        commit_overage_policy=request.commit_overage_policy or budget.commit_overage_policy,
        metadata=request.metadata if request.metadata is not None else budget.metadata,
        updated_at_ms=now_ms,
    )
    updated = ledger.with_over_limit_recomputed(updated)
    tx.put(updated)
    return Reply(status=200, body=budget_view(updated))


def fund_budget(
    tx: Tx,
    principal: Principal,
    params: Mapping[str, str],
    request: BudgetFundingRequest,
    digest: str,
    now_ms: int,
) -> Reply | Rejection:
    """CREDIT, DEBIT, RESET, REPAY_DEBT or RESET_SPENT; replayable with ``idempotency_key``."""
    budget = _addressed_budget(tx, principal, params, admin_tenant=True)
    if isinstance(budget, Rejection):
        return budget
    endpoint = f"fund:{budget.store_key}"
    key = request.idempotency_key
    if key is not None:
        prior = tx.get(IdempotencyRecord, idempotency_key(budget.tenant_id, endpoint, key))
        if prior is not None:
            if prior.payload_hash != digest:
                return problem(
                    409,
                    "IDEMPOTENCY_MISMATCH",
                    f"idempotency_key {key!r} was already used with a different payload",
                )
            return Reply(status=200, body=prior.response)
    refused = _open_owner(tx, budget)
    if refused is not None:
        return refused
    for name, amount in (("amount", request.amount), ("spent", request.spent)):
        if amount is not None and amount.unit is not budget.unit:
            return problem(400, "UNIT_MISMATCH", f"{name}.unit must be {budget.unit.value}")
    funded = ledger.fund(
        budget,
        request.operation,
        request.amount.amount,
        spent=request.spent.amount if request.spent is not None else None,
        now_ms=now_ms,
    )
    if isinstance(funded, Rejection):
        return funded
    unit = budget.unit
    body: dict[str, JsonValue] = {
        "operation": request.operation.value,
        "previous_allocated": to_wire(Amount(unit, budget.allocated)),
        "new_allocated": to_wire(Amount(unit, funded.allocated)),
        "previous_remaining": to_wire(SignedAmount(unit, budget.remaining)),
        "new_remaining": to_wire(SignedAmount(unit, funded.remaining)),
        "previous_debt": to_wire(Amount(unit, budget.debt)),
        "new_debt": to_wire(Amount(unit, funded.debt)),
        "previous_spent": to_wire(Amount(unit, budget.spent)),
        "new_spent": to_wire(Amount(unit, funded.spent)),
        "timestamp": format_ms(now_ms),
    }
    tx.put(funded)
    if key is not None:
        tx.put(
            IdempotencyRecord(
                tenant_id=budget.tenant_id,
                endpoint=endpoint,
                key=key,
                payload_hash=digest,
                response=body,
                status_code=200,
                created_at_ms=now_ms,
                expires_at_ms=now_ms + FUND_IDEMPOTENCY_TTL_MS,
            )
        )
    return Reply(status=200, body=body)


def freeze_budget(
    tx: Tx,
    params: Mapping[str, str],
    request: BudgetStatusTransitionRequest,
    now_ms: int,
    *,
    freeze: bool,
) -> Reply | Rejection:
    """ACTIVE -> FROZEN (``freeze``) or FROZEN -> ACTIVE; CLOSED is final."""
    del request  # the reason is accepted; this server keeps no audit log
    budget = _addressed_budget(tx, AdminPrincipal(), params)
    if isinstance(budget, Rejection):
        return budget
    refused = _open_owner(tx, budget)
    if refused is not None:
        return refused
    if budget.status is BudgetStatus.CLOSED:
        return problem(409, "BUDGET_CLOSED", f"Budget is closed for scope: {budget.scope}")
    wanted_from = BudgetStatus.ACTIVE if freeze else BudgetStatus.FROZEN
    if budget.status is not wanted_from:
        code = "BUDGET_FROZEN" if freeze else "INVALID_REQUEST"
        return problem(409, code, f"Budget is already {budget.status.value}: {budget.scope}")
    target = BudgetStatus.FROZEN if freeze else BudgetStatus.ACTIVE
    updated = attrs.evolve(budget, status=target, updated_at_ms=now_ms)
    tx.put(updated)
    return Reply(status=200, body=budget_view(updated))


# Policies -----------------------------------------------------------------------


def _effective_window(
    start: str | None, end: str | None
) -> tuple[int | None, int | None] | Rejection:
    begin = parse_datetime_ms(start) if start else None
    until = parse_datetime_ms(end) if end else None
    if begin is not None and until is not None and begin >= until:
        return _bad("effective_from must be before effective_until")
    return begin, until


def create_policy(
    tx: Tx, principal: Principal, request: PolicyCreateRequest, now_ms: int, policy_id: str
) -> Reply | Rejection:
    """Add a policy to the acting tenant."""
    if isinstance(principal, TenantPrincipal) and request.tenant_id is not None:
        return _bad("tenant_id must not be sent with a tenant API key")
    tenant = _acting_tenant(tx, principal, request.tenant_id, "createPolicy")
    if isinstance(tenant, Rejection):
        return tenant
    if tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(tenant.tenant_id)
    pattern = normalize_pattern(request.scope_pattern)
    if pattern is None:
        return _bad(
            "scope_pattern must be a scope path whose segments may be level:* or *, "
            f"got {request.scope_pattern!r}"
        )
    if any(p.name == request.name for p in tx.scan(PolicyRecord, tenant.tenant_id)):
        return problem(409, "DUPLICATE_RESOURCE", f"A policy named {request.name!r} exists")
    window = _effective_window(request.effective_from, request.effective_until)
    if isinstance(window, Rejection):
        return window
    policy = PolicyRecord(
        policy_id=policy_id,
        tenant_id=tenant.tenant_id,
        name=request.name,
        scope_pattern=pattern,
        priority=request.priority or 0,
        caps=request.caps,
        commit_overage_policy=request.commit_overage_policy,
        reservation_ttl_override=request.reservation_ttl_override,
        rate_limits=request.rate_limits,
        effective_from_ms=window[0],
        effective_until_ms=window[1],
        created_at_ms=now_ms,
    )
    tx.put(policy)
    return Reply(status=201, body=policy_view(policy))


def list_policies(tx: Tx, principal: Principal, params: Mapping[str, str]) -> Reply | Rejection:
    """The caller tenant's policies (the admin names the tenant)."""
    limit = _params_limit(params)
    if isinstance(limit, Rejection):
        return limit
    tenant = _acting_tenant(
        tx,
        principal,
        None if isinstance(principal, TenantPrincipal) else params.get("tenant_id") or None,
        "listPolicies",
    )
    if isinstance(tenant, Rejection):
        return tenant
    pattern = params.get("scope_pattern") or None
    status = params.get("status") or None
    rows = [
        policy
        for policy in tx.scan(PolicyRecord, tenant.tenant_id)
        if (pattern is None or policy.scope_pattern == normalize_pattern(pattern))
        and (status is None or policy.status.value == status)
    ]
    page = paginate(
        rows,
        key=lambda policy: (policy.created_at_ms, policy.policy_id),
        descending=False,
        limit=limit,
        cursor=params.get("cursor") or None,
        fingerprint=_fingerprint(tenant.tenant_id, pattern, status),
    )
    if isinstance(page, Rejection):
        return page
    return _list_reply("policies", [policy_view(p) for p in page.rows], page.next_cursor)


def update_policy(
    tx: Tx, principal: Principal, policy_id: str, request: PolicyUpdateRequest, now_ms: int
) -> Reply | Rejection:
    """Change any mutable field of a policy of the caller's tenant."""
    policy = tx.get(PolicyRecord, policy_id)
    if policy is None:
        return problem(404, "NOT_FOUND", f"Policy not found: {policy_id}")
    if isinstance(principal, TenantPrincipal) and policy.tenant_id != principal.tenant_id:
        return problem(403, "FORBIDDEN", "The policy belongs to another tenant")
    tenant = tx.get(Tenant, policy.tenant_id)
    if tenant is not None and tenant.status is TenantStatus.CLOSED:
        return _tenant_closed(policy.tenant_id)
    window = _effective_window(
        request.effective_from
        or (format_ms(policy.effective_from_ms) if policy.effective_from_ms is not None else None),
        request.effective_until
        or (
            format_ms(policy.effective_until_ms) if policy.effective_until_ms is not None else None
        ),
    )
    if isinstance(window, Rejection):
        return window
    if (
        request.name is not None
        and request.name != policy.name
        and any(p.name == request.name for p in tx.scan(PolicyRecord, policy.tenant_id))
    ):
        return problem(409, "DUPLICATE_RESOURCE", f"A policy named {request.name!r} exists")
    updated = attrs.evolve(
        policy,
        name=request.name or policy.name,
        priority=request.priority if request.priority is not None else policy.priority,
        caps=request.caps if request.caps is not None else policy.caps,
        commit_overage_policy=request.commit_overage_policy or policy.commit_overage_policy,
        reservation_ttl_override=request.reservation_ttl_override
        or policy.reservation_ttl_override,
        rate_limits=request.rate_limits if request.rate_limits is not None else policy.rate_limits,
        effective_from_ms=window[0],
        effective_until_ms=window[1],
        status=request.status or policy.status,
        updated_at_ms=now_ms,
    )
    tx.put(updated)
    return Reply(status=200, body=policy_view(updated))


# Introspection --------------------------------------------------------------------


def introspect(principal: Principal) -> Reply:
    """``GET /v1/auth/introspect``: who the credential is and what it may do."""
    if isinstance(principal, AdminPrincipal):
        return Reply(
            status=200,
            body={
                "authenticated": True,
                "auth_type": "admin",
                "permissions": ["*"],
                "capabilities": capabilities(None),
            },
        )
    body: dict[str, JsonValue] = {
        "authenticated": True,
        "auth_type": "tenant",
        "tenant_id": principal.tenant_id,
        "permissions": list(principal.permissions),
        "capabilities": capabilities(principal.permissions),
    }
    _opt(body, "scope_filter", list(principal.scope_filter) if principal.scope_filter else None)
    return Reply(status=200, body=body, tenant=principal.tenant_id)
