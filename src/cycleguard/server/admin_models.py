"""Request bodies of the admin plane (the subset of cycles-governance-admin v0.1.25 we serve).

Field names are the wire names; the strict codec rejects unknown fields and
nulls. :func:`issues` holds the field rules the schema states (lengths,
ranges, patterns, enums) so handlers can answer 400 naming every problem.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import TypeAlias, final

import attrs

from cycleguard._core._errors import ValidationIssue
from cycleguard._core._json import JsonObject
from cycleguard._core._models import Amount, Caps, OveragePolicy, Unit
from cycleguard.server.auth import PERMISSIONS
from cycleguard.server.clock import parse_datetime_ms
from cycleguard.server.ledger import FundingOperation
from cycleguard.server.records import PolicyStatus, RolloverPolicy, TenantStatus, TtlOverride

__all__ = (
    "AdminRequest",
    "ApiKeyCreateRequest",
    "BudgetCreateRequest",
    "BudgetFundingRequest",
    "BudgetStatusTransitionRequest",
    "BudgetUpdateRequest",
    "ExpiryPolicy",
    "PolicyCreateRequest",
    "PolicyUpdateRequest",
    "TenantCreateRequest",
    "TenantUpdateRequest",
    "issues",
)

TENANT_ID = re.compile(r"[a-z0-9-]{3,64}")
TTL_RANGE = (1_000, 86_400_000)


class ExpiryPolicy(enum.Enum):
    """Stored with a tenant; the embedded server always releases expired holds."""

    AUTO_RELEASE = "AUTO_RELEASE"
    MANUAL_CLEANUP = "MANUAL_CLEANUP"
    GRACE_ONLY = "GRACE_ONLY"


@final
@attrs.frozen(kw_only=True)
class TenantCreateRequest:
    """``POST /v1/admin/tenants``."""

    tenant_id: str
    name: str
    parent_tenant_id: str | None = None
    metadata: Mapping[str, str] | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: int | None = None
    max_reservation_ttl_ms: int | None = None
    max_reservation_extensions: int | None = None
    reservation_expiry_policy: ExpiryPolicy | None = None


@final
@attrs.frozen(kw_only=True)
class TenantUpdateRequest:
    """``PATCH /v1/admin/tenants/{tenant_id}``."""

    name: str | None = None
    status: TenantStatus | None = None
    metadata: Mapping[str, str] | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: int | None = None
    max_reservation_ttl_ms: int | None = None
    max_reservation_extensions: int | None = None


@final
@attrs.frozen(kw_only=True)
class ApiKeyCreateRequest:
    """``POST /v1/admin/api-keys``."""

    tenant_id: str
    name: str
    permissions: tuple[str, ...] | None = None
    scope_filter: tuple[str, ...] | None = None
    expires_at: str | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class BudgetCreateRequest:
    """``POST /v1/admin/budgets``."""

    scope: str
    unit: Unit
    allocated: Amount
    tenant_id: str | None = None
    overdraft_limit: Amount | None = None
    commit_overage_policy: OveragePolicy | None = None
    rollover_policy: RolloverPolicy | None = None
    period_start: str | None = None
    period_end: str | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class BudgetUpdateRequest:
    """``PATCH /v1/admin/budgets?scope=&unit=``."""

    overdraft_limit: Amount | None = None
    commit_overage_policy: OveragePolicy | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class BudgetFundingRequest:
    """``POST /v1/admin/budgets/fund?scope=&unit=``."""

    operation: FundingOperation
    amount: Amount
    spent: Amount | None = None
    reason: str | None = None
    idempotency_key: str | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class BudgetStatusTransitionRequest:
    """Optional body of freeze and unfreeze."""

    reason: str | None = None
    metadata: JsonObject | None = None


@final
@attrs.frozen(kw_only=True)
class PolicyCreateRequest:
    """``POST /v1/admin/policies``."""

    name: str
    scope_pattern: str
    tenant_id: str | None = None
    priority: int | None = None
    caps: Caps | None = None
    commit_overage_policy: OveragePolicy | None = None
    reservation_ttl_override: TtlOverride | None = None
    rate_limits: JsonObject | None = None
    effective_from: str | None = None
    effective_until: str | None = None


@final
@attrs.frozen(kw_only=True)
class PolicyUpdateRequest:
    """``PATCH /v1/admin/policies/{policy_id}`` (``description`` is accepted and not kept)."""

    name: str | None = None
    description: str | None = None
    priority: int | None = None
    caps: Caps | None = None
    commit_overage_policy: OveragePolicy | None = None
    reservation_ttl_override: TtlOverride | None = None
    rate_limits: JsonObject | None = None
    effective_from: str | None = None
    effective_until: str | None = None
    status: PolicyStatus | None = None


AdminRequest: TypeAlias = (
    TenantCreateRequest
    | TenantUpdateRequest
    | ApiKeyCreateRequest
    | BudgetCreateRequest
    | BudgetUpdateRequest
    | BudgetFundingRequest
    | BudgetStatusTransitionRequest
    | PolicyCreateRequest
    | PolicyUpdateRequest
)

_Issues = Iterator[ValidationIssue]


def _length(field: str, value: str | None, high: int, low: int = 0) -> _Issues:
    if value is not None and not low <= len(value) <= high:
        yield ValidationIssue(field, f"length must be between {low} and {high}, got {len(value)}")


def _range(field: str, value: int | None, low: int, high: int | None = None) -> _Issues:
    if value is None:
        return
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        yield ValidationIssue(field, f"must be {bound}, got {value}")


def _datetime(field: str, value: str | None) -> _Issues:
    if value is not None and parse_datetime_ms(value) is None:
        yield ValidationIssue(field, f"must be an RFC 3339 date-time, got {value!r}")


def _ttls(default: int | None, maximum: int | None, extensions: int | None, prefix: str) -> _Issues:
    yield from _range(f"{prefix}default_reservation_ttl_ms", default, *TTL_RANGE)
    yield from _range(f"{prefix}max_reservation_ttl_ms", maximum, *TTL_RANGE)
    yield from _range(f"{prefix}max_reservation_extensions", extensions, 0)


def _caps(caps: Caps | None) -> _Issues:
    if caps is None:
        return
    for name in ("max_tokens", "max_steps_remaining", "cooldown_ms"):
        yield from _range(f"caps.{name}", getattr(caps, name), 0)
    for name in ("tool_allowlist", "tool_denylist"):
        tools: tuple[str, ...] = getattr(caps, name) or ()
        for index, tool in enumerate(tools):
            yield from _length(f"caps.{name}[{index}]", tool, 256)


def _override(override: TtlOverride | None) -> _Issues:
    if override is None:
        return
    yield from _range(
        "reservation_ttl_override.default_ttl_ms", override.default_ttl_ms, *TTL_RANGE
    )
    yield from _range("reservation_ttl_override.max_ttl_ms", override.max_ttl_ms, *TTL_RANGE)
    yield from _range("reservation_ttl_override.max_extensions", override.max_extensions, 0)


def _request_issues(request: AdminRequest) -> _Issues:
    match request:
        case TenantCreateRequest():
            if not TENANT_ID.fullmatch(request.tenant_id):
                yield ValidationIssue(
                    "tenant_id", "must be 3 to 64 characters of lower-case letters, digits and -"
                )
            yield from _length("name", request.name, 256, 1)
            if request.metadata is not None and len(request.metadata) > 32:
                yield ValidationIssue("metadata", "at most 32 entries")
            yield from _ttls(
                request.default_reservation_ttl_ms,
                request.max_reservation_ttl_ms,
                request.max_reservation_extensions,
                "",
            )
        case TenantUpdateRequest():
            yield from _length("name", request.name, 256, 1)
            if request.metadata is not None and len(request.metadata) > 32:
                yield ValidationIssue("metadata", "at most 32 entries")
            yield from _ttls(
                request.default_reservation_ttl_ms,
                request.max_reservation_ttl_ms,
                request.max_reservation_extensions,
                "",
            )
        case ApiKeyCreateRequest():
            yield from _length("name", request.name, 256, 1)
            for index, permission in enumerate(request.permissions or ()):
                if permission not in PERMISSIONS:
                    yield ValidationIssue(
                        f"permissions[{index}]", f"unknown permission {permission!r}"
                    )
            yield from _datetime("expires_at", request.expires_at)
        case BudgetCreateRequest():
            for name, amount in (
                ("allocated", request.allocated),
                ("overdraft_limit", request.overdraft_limit),
            ):
                if amount is not None and amount.unit is not request.unit:
                    yield ValidationIssue(f"{name}.unit", f"must be {request.unit.value}")
            yield from _datetime("period_start", request.period_start)
            yield from _datetime("period_end", request.period_end)
        case BudgetFundingRequest():
            yield from _length("reason", request.reason, 512)
            yield from _length("idempotency_key", request.idempotency_key, 256, 1)
            if request.spent is not None and request.operation is not FundingOperation.RESET_SPENT:
                yield ValidationIssue("spent", "is only accepted with operation RESET_SPENT")
        case BudgetStatusTransitionRequest():
            yield from _length("reason", request.reason, 512)
        case PolicyCreateRequest() | PolicyUpdateRequest():
            yield from _length("name", request.name, 256, 1)
            yield from _range("priority", request.priority, 0)
            yield from _caps(request.caps)
            yield from _override(request.reservation_ttl_override)
            yield from _datetime("effective_from", request.effective_from)
            yield from _datetime("effective_until", request.effective_until)
        case BudgetUpdateRequest():
            pass


def issues(request: AdminRequest) -> tuple[ValidationIssue, ...]:
    """Every field rule ``request`` breaks (cross-record rules are the handlers')."""
    return tuple(_request_issues(request))
