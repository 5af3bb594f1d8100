"""API keys and permissions: secrets, hashing, who the caller is and what it may do.

A tenant key's secret is shown once, when it is created, and stored only as
its SHA-256 (the secret carries 192 random bits, so a fast hash is enough);
lookups go by that hash and the stored hash is compared with
:func:`hmac.compare_digest`. The admin key is configured at start and
compared in constant time too. Secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, TypeAlias, final

import attrs

from cycleguard._core._errors import ErrorCode
from cycleguard.server.records import (
    ApiKeyRecord,
    KeyHash,
    KeyStatus,
    Rejection,
    Tenant,
    TenantStatus,
    rejection,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from cycleguard.server.stores import Tx

__all__ = (
    "ADMIN_CAPABILITIES",
    "DEFAULT_PERMISSIONS",
    "PERMISSIONS",
    "AdminCaller",
    "AdminPrincipal",
    "Caller",
    "InvalidCaller",
    "KeyCaller",
    "NoCaller",
    "Principal",
    "TenantPrincipal",
    "admin_key_matches",
    "authenticate",
    "capabilities",
    "has_permission",
    "hash_secret",
    "new_secret",
)

KEY_PREFIX = "cyc_live_"
PREFIX_LENGTH = 14

PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "admin:read",
    "admin:write",
    "admin:tenants:read",
    "admin:tenants:write",
    "admin:budgets:read",
    "admin:budgets:write",
    "admin:policies:read",
    "admin:policies:write",
    "admin:apikeys:read",
    "admin:apikeys:write",
    "admin:webhooks:read",
    "admin:webhooks:write",
    "admin:events:read",
    "admin:audit:read",
)
"""Every permission the admin plane accepts on a key."""

DEFAULT_PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
)
"""What a key gets when it is created without ``permissions``: every runtime endpoint."""

_RESERVATION_READS = frozenset({"reservations:list"})
_RESERVATION_WRITES = frozenset(
    {"reservations:create", "reservations:commit", "reservations:release", "reservations:extend"}
)


def new_secret() -> str:
    """A fresh key secret: ``cyc_live_`` and 32 URL-safe characters (192 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: lower-case hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_prefix(secret: str) -> str:
    """The displayable start of a secret (its first 14 characters)."""
    return secret[:PREFIX_LENGTH]


def admin_key_matches(configured: str | None, presented: str) -> bool:
    """Whether ``presented`` is the configured admin key (constant time; never without one)."""
    if not configured:
        return False
    return hmac.compare_digest(
        hashlib.sha256(configured.encode("utf-8")).digest(),
        hashlib.sha256(presented.encode("utf-8")).digest(),
    )


def has_permission(permissions: Iterable[str], needed: str) -> bool:
    """Whether a key holding ``permissions`` may do what needs ``needed``.

    ``admin:write`` satisfies any ``*:write`` and the reservation mutations,
    ``admin:read`` any ``*:read`` and ``reservations:list``, and a granular
    ``admin:<area>:<access>`` satisfies ``<area>:<access>``.

    >>> has_permission(["admin:write"], "budgets:write")
    True
    >>> has_permission(["admin:read"], "budgets:write")
    False
    """
    held = frozenset(permissions)
    if needed in held or f"admin:{needed}" in held:
        return True
    if "admin:write" in held and (needed.endswith(":write") or needed in _RESERVATION_WRITES):
        return True
    return "admin:read" in held and (needed.endswith(":read") or needed in _RESERVATION_READS)


ADMIN_CAPABILITIES = (
    "view_overview",
    "view_tenants",
    "view_api_keys",
    "view_audit",
    "manage_tenants",
    "manage_api_keys",
)
_TENANT_CAPABILITIES: Mapping[str, tuple[str, ...]] = {
    "view_budgets": ("budgets:read", "admin:read", "admin:budgets:read"),
    "view_policies": ("policies:read", "admin:read", "admin:policies:read"),
    "view_webhooks": ("webhooks:read", "admin:read", "admin:webhooks:read"),
    "view_events": ("events:read", "admin:read", "admin:events:read"),
    "view_reservations": ("reservations:list", *sorted(_RESERVATION_WRITES), "admin:read"),
    "manage_budgets": ("budgets:write", "admin:write", "admin:budgets:write"),
    "manage_policies": ("policies:write", "admin:write", "admin:policies:write"),
    "manage_webhooks": ("webhooks:write", "admin:write", "admin:webhooks:write"),
    "manage_reservations": (*sorted(_RESERVATION_WRITES), "admin:write"),
}


def capabilities(permissions: Iterable[str] | None) -> dict[str, bool]:
    """The introspection capability map; ``None`` means the admin key (all true).

    For tenant keys this is the spec's derivation table; the admin-plane
    capabilities are always false for them.
    """
    names = (*ADMIN_CAPABILITIES, *_TENANT_CAPABILITIES)
    if permissions is None:
        return dict.fromkeys(names, True)
    held = frozenset(permissions)
    flags: dict[str, bool] = dict.fromkeys(ADMIN_CAPABILITIES, False)
    for name, grants in _TENANT_CAPABILITIES.items():
        flags[name] = not held.isdisjoint(grants)
    return flags


# Callers (what the edge saw) and principals (who it turned out to be) ---------


@final
@attrs.frozen
class AdminCaller:
    """The request carried the right admin key."""


@final
@attrs.frozen
class KeyCaller:
    """The request carried a tenant key; only its hash travels further."""

    secret_hash: str = attrs.field(repr=False)


@final
@attrs.frozen
class InvalidCaller:
    """The request carried a credential that is wrong on its face."""

    message: str


@final
@attrs.frozen
class NoCaller:
    """The request carried no usable credential."""

    message: str = "Missing API key (X-Cycles-API-Key)"


Caller: TypeAlias = AdminCaller | KeyCaller | InvalidCaller | NoCaller


@final
@attrs.frozen
class AdminPrincipal:
    """The operator holding the admin key."""


@final
@attrs.frozen(kw_only=True)
class TenantPrincipal:
    """A tenant key that authenticated, with its tenant's current status."""

    tenant_id: str
    key_id: str
    permissions: tuple[str, ...]
    scope_filter: tuple[str, ...] | None
    tenant_status: TenantStatus

    def may(self, needed: str) -> bool:
        """Whether this key holds (or is granted through a wildcard) ``needed``."""
        # Holding it is the common case, and a look through the tuple is all it takes.
        return needed in self.permissions or has_permission(self.permissions, needed)


Principal: TypeAlias = AdminPrincipal | TenantPrincipal


def _unauthorized(message: str) -> Rejection:
    return rejection(ErrorCode.UNAUTHORIZED, message)


def authenticate(tx: Tx, caller: Caller, now_ms: int) -> Principal | Rejection:
    """Who ``caller`` is, or the 401 that says why it is nobody.

    A tenant key must exist, match, be ACTIVE and unexpired, and belong to a
    tenant that is not CLOSED. (A SUSPENDED tenant authenticates: it may
    still settle what it holds; the operations decide what it may start.)
    """
    match caller:
        case AdminCaller():
            return AdminPrincipal()
        case InvalidCaller(message=message) | NoCaller(message=message):
            return _unauthorized(message)
        case KeyCaller():
            return _authenticate_key(tx, caller.secret_hash, now_ms)


def _authenticate_key(tx: Tx, secret_hash: str, now_ms: int) -> TenantPrincipal | Rejection:
    lookup = tx.get(KeyHash, secret_hash)
    key = tx.get(ApiKeyRecord, lookup.key_id) if lookup is not None else None
    if key is None or not hmac.compare_digest(key.secret_hash, secret_hash):
        return _unauthorized("Invalid API key")
    match key.effective_status(now_ms):
        case KeyStatus.REVOKED:
            return _unauthorized("API key has been revoked")
        case KeyStatus.EXPIRED:
            return _unauthorized("API key has expired")
        case KeyStatus.ACTIVE:
            pass
    tenant = tx.get(Tenant, key.tenant_id)
    if tenant is None or tenant.status is TenantStatus.CLOSED:
        return _unauthorized("The API key's tenant is closed")
    return TenantPrincipal(
        tenant_id=key.tenant_id,
        key_id=key.key_id,
        permissions=key.permissions,
        scope_filter=key.scope_filter,
        tenant_status=tenant.status,
    )
