"""Scope patterns, policy selection and settings resolution (pure)."""

from __future__ import annotations

import pytest

from cycleguard._core._models import Caps, OveragePolicy, Unit
from cycleguard.server.policies import (
    DEFAULT_MAX_TTL_MS,
    matches,
    normalize_pattern,
    normalize_scope,
    resolve_settings,
    select_policy,
)
from cycleguard.server.records import Budget, PolicyRecord, PolicyStatus, Tenant, TtlOverride

SCOPES = ("tenant:acme", "tenant:acme/agent:bot")


def policy(
    pattern: str,
    priority: int = 0,
    *,
    status: PolicyStatus = PolicyStatus.ACTIVE,
    effective_from_ms: int | None = None,
    effective_until_ms: int | None = None,
    caps: Caps | None = None,
    commit_overage_policy: OveragePolicy | None = None,
    reservation_ttl_override: TtlOverride | None = None,
) -> PolicyRecord:
    return PolicyRecord(
        policy_id=f"p-{pattern}-{priority}",
        tenant_id="acme",
        name=pattern,
        scope_pattern=pattern,
        priority=priority,
        status=status,
        effective_from_ms=effective_from_ms,
        effective_until_ms=effective_until_ms,
        caps=caps,
        commit_overage_policy=commit_overage_policy,
        reservation_ttl_override=reservation_ttl_override,
        created_at_ms=0,
    )


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("tenant:Acme", "tenant:acme"),
        ("tenant:a/workspace:W/agent:x", "tenant:a/workspace:w/agent:x"),
        ("agent:x/tenant:a", None),
        ("tenant:a/tenant:b", None),
        ("team:x", None),
        ("tenant:", None),
        ("tenant:a b", None),
        ("", None),
    ],
)
def test_normalize_scope(scope: str, expected: str | None) -> None:
    assert normalize_scope(scope) == expected


def test_patterns_allow_wildcards_only_as_patterns() -> None:
    assert normalize_pattern("tenant:acme/agent:*") == "tenant:acme/agent:*"
    assert normalize_pattern("*/agent:Bot") == "*/agent:bot"
    assert normalize_scope("tenant:acme/agent:*") is None


@pytest.mark.parametrize(
    ("pattern", "scope", "expected"),
    [
        ("tenant:acme", "tenant:acme", True),
        ("tenant:acme", "tenant:acme/agent:bot", False),
        ("tenant:acme/agent:*", "tenant:acme/agent:bot", True),
        ("tenant:acme/agent:*", "tenant:acme/app:bot", False),
        ("tenant:acme/*", "tenant:acme/app:x", True),
        ("tenant:acme/*", "tenant:acme/app:x/agent:y", False),
        ("*/agent:bot", "tenant:other/agent:bot", True),
    ],
)
def test_pattern_matches_a_whole_path(pattern: str, scope: str, expected: bool) -> None:
    assert matches(pattern, scope) is expected


def test_highest_priority_wins_then_deeper_match() -> None:
    low = policy("tenant:acme/agent:*", 1)
    high = policy("tenant:acme", 5)
    assert select_policy([low, high], SCOPES, 0) == high
    deep = policy("tenant:acme/agent:bot", 5)
    assert select_policy([high, deep], SCOPES, 0) == deep


def test_disabled_and_out_of_window_policies_do_not_apply() -> None:
    candidates = [
        policy("tenant:acme", 9, status=PolicyStatus.DISABLED),
        policy("tenant:acme", 8, effective_from_ms=100),
        policy("tenant:acme", 7, effective_until_ms=50),
    ]
    assert select_policy(candidates, SCOPES, 60) is None
    assert select_policy(candidates, SCOPES, 100) == candidates[1]
    assert select_policy(candidates, ("tenant:other",), 100) is None


def test_settings_precedence() -> None:
    tenant = Tenant(
        tenant_id="acme",
        name="Acme",
        created_at_ms=0,
        default_commit_overage_policy=OveragePolicy.REJECT,
        default_reservation_ttl_ms=20_000,
        max_reservation_ttl_ms=30_000,
        max_reservation_extensions=3,
    )
    plain = resolve_settings(tenant=tenant, policy=None, leaf_budget=None)
    assert (plain.overage_policy, plain.ttl_ms, plain.max_extensions, plain.caps) == (
        OveragePolicy.REJECT,
        20_000,
        3,
        None,
    )
    capped = resolve_settings(tenant=tenant, policy=None, leaf_budget=None, ttl_ms=90_000)
    assert capped.ttl_ms == 30_000
    ruling = policy(
        "tenant:acme",
        caps=Caps(max_tokens=10),
        commit_overage_policy=OveragePolicy.ALLOW_WITH_OVERDRAFT,
        reservation_ttl_override=TtlOverride(default_ttl_ms=5_000, max_extensions=1),
    )
    governed = resolve_settings(tenant=tenant, policy=ruling, leaf_budget=None)
    assert governed.overage_policy is OveragePolicy.ALLOW_WITH_OVERDRAFT
    assert (governed.ttl_ms, governed.max_extensions) == (5_000, 1)
    assert governed.caps == Caps(max_tokens=10)
    explicit = resolve_settings(
        tenant=tenant,
        policy=ruling,
        leaf_budget=None,
        overage_policy=OveragePolicy.ALLOW_IF_AVAILABLE,
    )
    assert explicit.overage_policy is OveragePolicy.ALLOW_IF_AVAILABLE


def test_budget_policy_sits_between_policy_and_tenant() -> None:
    tenant = Tenant(tenant_id="acme", name="Acme", created_at_ms=0)
    leaf = Budget(
        scope="tenant:acme",
        unit=Unit.TOKENS,
        tenant_id="acme",
        ledger_id="l",
        allocated=1,
        remaining=1,
        created_at_ms=0,
        commit_overage_policy=OveragePolicy.REJECT,
    )
    settings = resolve_settings(tenant=tenant, policy=None, leaf_budget=leaf)
    assert settings.overage_policy is OveragePolicy.REJECT
    assert settings.max_ttl_ms == DEFAULT_MAX_TTL_MS


def test_empty_caps_do_not_make_caps() -> None:
    tenant = Tenant(tenant_id="acme", name="Acme", created_at_ms=0)
    settings = resolve_settings(
        tenant=tenant, policy=policy("tenant:acme", caps=Caps()), leaf_budget=None
    )
    assert settings.caps is None
