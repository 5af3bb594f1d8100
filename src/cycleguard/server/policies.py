"""Pure rules for tenant policies and the reservation settings they shape.

Scope patterns
    A pattern is a scope path whose segments may be wildcards. It matches a
    *whole* scope path: same number of segments, each matching. A segment
    ``level:*`` matches any value at that level (``tenant:acme/agent:*``); a
    bare ``*`` segment matches any one segment. Values compare lower-cased,
    as scope derivation lower-cases them.

Which policy applies
    A policy applies to a request when its pattern matches any of the
    request's affected scopes (each a whole scope path, root first). Of the
    ACTIVE policies in their effective window, the highest ``priority`` wins;
    ties go to the policy matching the deeper scope, then to the newer one.

Settings
    Each setting is taken from the first source that has it: the request,
    then the winning policy, then (for the overage policy) the deepest
    budgeted scope's ledger, then the tenant, then the protocol default.
    A TTL above the maximum is capped to it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from cycleguard._core._models import SUBJECT_LEVELS, Caps, OveragePolicy
from cycleguard.server.records import Budget, PolicyRecord, PolicyStatus, Tenant

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = (
    "DEFAULT_GRACE_MS",
    "DEFAULT_MAX_EXTENSIONS",
    "DEFAULT_MAX_TTL_MS",
    "DEFAULT_TTL_MS",
    "Settings",
    "effective_caps",
    "matches",
    "normalize_pattern",
    "normalize_scope",
    "resolve_settings",
    "select_policy",
)

DEFAULT_TTL_MS = 60_000
DEFAULT_MAX_TTL_MS = 3_600_000
DEFAULT_MAX_EXTENSIONS = 10
DEFAULT_GRACE_MS = 5_000

_VALUE = re.compile(r"[a-z0-9_.-]+")


def normalize_scope(scope: str) -> str | None:
    """The canonical form of a scope path, or ``None`` if it is not one.

    Levels must be known and in canonical order, each at most once; values are
    lower-cased and must match the subject value pattern.

    >>> normalize_scope("tenant:Acme/agent:Bot")
    'tenant:acme/agent:bot'
    >>> normalize_scope("agent:x/tenant:y") is None
    True
    """
    return _normalize(scope, wildcards=False)


def normalize_pattern(pattern: str) -> str | None:
    """The canonical form of a scope pattern, or ``None`` if it is not one.

    >>> normalize_pattern("tenant:ACME/agent:*")
    'tenant:acme/agent:*'
    >>> normalize_pattern("*/agent:summarizer")
    '*/agent:summarizer'
    """
    return _normalize(pattern, wildcards=True)


def _normalize(text: str, *, wildcards: bool) -> str | None:
    if not text:
        return None
    segments: list[str] = []
    last_rank = -1
    for raw in text.split("/"):
        if wildcards and raw == "*":
            segments.append("*")
            continue
        level, sep, value = raw.partition(":")
        if not sep or level not in SUBJECT_LEVELS:
            return None
        rank = SUBJECT_LEVELS.index(level)
        if rank <= last_rank:
            return None
        last_rank = rank
        value = value.lower()
        if not (wildcards and value == "*") and not _VALUE.fullmatch(value):
            return None
        segments.append(f"{level}:{value}")
    return "/".join(segments)


def matches(pattern: str, scope: str) -> bool:
    """Whether a normalized ``pattern`` matches the whole scope path ``scope``.

    >>> matches("tenant:acme/agent:*", "tenant:acme/agent:bot")
    True
    >>> matches("tenant:acme/agent:*", "tenant:acme/workspace:w/agent:bot")
    False
    >>> matches("*/agent:bot", "tenant:acme/agent:bot")
    True
    """
    wanted = pattern.split("/")
    actual = scope.split("/")
    if len(wanted) != len(actual):
        return False
    for want, have in zip(wanted, actual, strict=True):
        if want == "*" or want == have:
            continue
        level, _, value = want.partition(":")
        if value != "*" or not have.startswith(f"{level}:"):
            return False
    return True


def _in_effect(policy: PolicyRecord, now_ms: int) -> bool:
    if policy.status is not PolicyStatus.ACTIVE:
        return False
    if policy.effective_from_ms is not None and now_ms < policy.effective_from_ms:
        return False
    return policy.effective_until_ms is None or now_ms < policy.effective_until_ms


def select_policy(
    policies: Iterable[PolicyRecord], scopes: Sequence[str], now_ms: int
) -> PolicyRecord | None:
    """The policy that governs a request on ``scopes`` (root first), if any."""
    best: tuple[int, int, int, str] | None = None
    chosen: PolicyRecord | None = None
    for policy in policies:
        if not _in_effect(policy, now_ms):
            continue
        depth = max(
            (i for i, scope in enumerate(scopes, 1) if matches(policy.scope_pattern, scope)),
            default=0,
        )
        if depth == 0:
            continue
        rank = (policy.priority, depth, policy.created_at_ms, policy.policy_id)
        if best is None or rank > best:
            best, chosen = rank, policy
    return chosen


def effective_caps(policy: PolicyRecord | None) -> Caps | None:
    """The policy's caps if it sets any; ``None`` makes the decision a plain ALLOW."""
    if policy is None or policy.caps is None:
        return None
    if all(value is None for value in attrs.astuple(policy.caps, recurse=False)):
        return None
    return policy.caps


@attrs.frozen(kw_only=True)
class Settings:
    """The resolved settings of one reservation or event."""

    overage_policy: OveragePolicy
    ttl_ms: int
    max_ttl_ms: int
    max_extensions: int
    grace_period_ms: int
    caps: Caps | None


def resolve_settings(
    *,
    tenant: Tenant,
    policy: PolicyRecord | None,
    leaf_budget: Budget | None,
    ttl_ms: int | None = None,
    grace_period_ms: int | None = None,
    overage_policy: OveragePolicy | None = None,
) -> Settings:
    """Combine request values, the policy, the leaf budget and the tenant (module docstring)."""
    override = policy.reservation_ttl_override if policy is not None else None
    max_ttl = _first(
        override.max_ttl_ms if override else None,
        tenant.max_reservation_ttl_ms,
        default=DEFAULT_MAX_TTL_MS,
    )
    ttl = _first(
        ttl_ms,
        override.default_ttl_ms if override else None,
        tenant.default_reservation_ttl_ms,
        default=DEFAULT_TTL_MS,
    )
    overage = (
        overage_policy
        or (policy.commit_overage_policy if policy is not None else None)
        or (leaf_budget.commit_overage_policy if leaf_budget is not None else None)
        or tenant.default_commit_overage_policy
        or OveragePolicy.ALLOW_IF_AVAILABLE
    )
    return Settings(
        overage_policy=overage,
        ttl_ms=min(ttl, max_ttl),
        max_ttl_ms=max_ttl,
        max_extensions=_first(
            override.max_extensions if override else None,
            tenant.max_reservation_extensions,
            default=DEFAULT_MAX_EXTENSIONS,
        ),
        grace_period_ms=_first(grace_period_ms, default=DEFAULT_GRACE_MS),
        caps=effective_caps(policy),
    )


def _first(*values: int | None, default: int) -> int:
    for value in values:
        if value is not None:
            return value
    return default
