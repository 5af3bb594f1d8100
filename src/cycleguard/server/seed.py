"""Seed files: tenants, API keys, budgets and policies to create when a server starts.

A seed file is TOML with four optional arrays of tables; each entry has the
fields of the matching admin request (``allocated``, ``overdraft_limit`` and
``amount``-like fields may be plain integers in the budget's unit)::

    [[tenants]]
    tenant_id = "acme"
    name = "Acme"

    [[api_keys]]
    tenant_id = "acme"
    name = "demo"

    [[budgets]]
    tenant_id = "acme"
    scope = "tenant:acme"
    unit = "USD_MICROCENTS"
    allocated = 100_000_000

    [[policies]]
    tenant_id = "acme"
    name = "agents"
    scope_pattern = "tenant:acme/agent:*"
    caps = { max_tokens = 1024 }

Seeding is idempotent: what exists already (a tenant id, a budget's scope and
unit, a key or policy of the same name in the tenant) is left as it is, so a
durable server can keep its seed flag. Secrets of keys created now are
returned once, for the caller to print.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from typing import TYPE_CHECKING, TypeVar, cast, final

import attrs

from cycleguard.server import admin
from cycleguard.server.admin_models import (
    AdminRequest,
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    PolicyCreateRequest,
    TenantCreateRequest,
    issues,
)
from cycleguard.server.auth import AdminPrincipal, new_secret
from cycleguard.server.http import decode_body
from cycleguard.server.records import ApiKeyRecord, KeyStatus, PolicyRecord, Rejection

if TYPE_CHECKING:
    from pathlib import Path

    from cycleguard.server.clock import Clock
    from cycleguard.server.stores import Store, Tx

__all__ = ("CreatedKey", "Seed", "SeedError", "apply_seed", "load_seed")

A = TypeVar("A", bound=AdminRequest)


class SeedError(ValueError):
    """A seed file that cannot be read or applied; the message says where and why."""


@final
@attrs.frozen
class Seed:
    """The decoded entries of a seed file."""

    tenants: tuple[TenantCreateRequest, ...] = ()
    api_keys: tuple[ApiKeyCreateRequest, ...] = ()
    budgets: tuple[BudgetCreateRequest, ...] = ()
    policies: tuple[PolicyCreateRequest, ...] = ()


_SECTIONS = ("tenants", "api_keys", "budgets", "policies")
_AMOUNT_FIELDS = ("allocated", "overdraft_limit")


def _entries(data: dict[str, object], section: str) -> list[dict[str, object]]:
    raw = data.get(section, [])
    items = cast("list[object]", raw) if isinstance(raw, list) else None
    if items is None or not all(isinstance(item, dict) for item in items):
        raise SeedError(f"[[{section}]] must be an array of tables")
    return [dict(cast("dict[str, object]", item)) for item in items]


def _decode(section: str, index: int, entry: dict[str, object], cls: type[A]) -> A:
    # TOML tables go through the same strict JSON codec as HTTP bodies.
    decoded = decode_body(json.dumps(entry, default=str).encode(), cls)
    where = f"{section}[{index}]"
    if isinstance(decoded, Rejection):
        raise SeedError(f"{where}: {decoded.message}")
    found = issues(decoded)
    if found:
        raise SeedError(f"{where}: " + "; ".join(str(issue) for issue in found))
    return decoded


def load_seed(path: Path) -> Seed:
    """Read and check a seed file; raises :class:`SeedError` with a one-line reason."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SeedError(f"cannot read seed file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SeedError(f"seed file {path} is not valid TOML: {error}") from None
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise SeedError(f"seed file {path} has unknown sections: {', '.join(sorted(unknown))}")
    budgets = _entries(data, "budgets")
    for entry in budgets:
        unit = entry.get("unit")
        for name in _AMOUNT_FIELDS:
            if isinstance(entry.get(name), int) and isinstance(unit, str):
                entry[name] = {"unit": unit, "amount": entry[name]}
    return Seed(
        tenants=tuple(
            _decode("tenants", i, e, TenantCreateRequest)
            for i, e in enumerate(_entries(data, "tenants"))
        ),
        api_keys=tuple(
            _decode("api_keys", i, e, ApiKeyCreateRequest)
            for i, e in enumerate(_entries(data, "api_keys"))
        ),
        budgets=tuple(_decode("budgets", i, e, BudgetCreateRequest) for i, e in enumerate(budgets)),
        policies=tuple(
            _decode("policies", i, e, PolicyCreateRequest)
            for i, e in enumerate(_entries(data, "policies"))
        ),
    )


@final
@attrs.frozen
class CreatedKey:
    """A key the seed created: shown once."""

    tenant_id: str
    name: str
    key_id: str
    secret: str = attrs.field(repr=False)


def _apply(tx: Tx, seed: Seed, now_ms: int, secrets_for: list[str]) -> list[CreatedKey]:
    """Create what is missing, in order; any refusal aborts the whole seed."""
    principal = AdminPrincipal()
    for index, tenant in enumerate(seed.tenants):
        _check(admin.create_tenant(tx, tenant, now_ms), "tenants", index)
    created: list[CreatedKey] = []
    for index, key in enumerate(seed.api_keys):
        existing = [
            k
            for k in tx.scan(ApiKeyRecord, key.tenant_id)
            if k.name == key.name and k.effective_status(now_ms) is KeyStatus.ACTIVE
        ]
        if existing:
            continue
        key_id, secret = "key_" + secrets.token_hex(8), secrets_for[index]
        _check(admin.create_api_key(tx, key, now_ms, key_id, secret), "api_keys", index)
        created.append(
            CreatedKey(tenant_id=key.tenant_id, name=key.name, key_id=key_id, secret=secret)
        )
    for index, budget in enumerate(seed.budgets):
        outcome = admin.create_budget(tx, principal, budget, now_ms, "ldg_" + secrets.token_hex(8))
        if not (isinstance(outcome, Rejection) and outcome.error == "DUPLICATE_RESOURCE"):
            _check(outcome, "budgets", index)
    for index, policy in enumerate(seed.policies):
        tenant_id = policy.tenant_id or ""
        if any(p.name == policy.name for p in tx.scan(PolicyRecord, tenant_id)):
            continue
        outcome = admin.create_policy(tx, principal, policy, now_ms, "pol_" + secrets.token_hex(8))
        _check(outcome, "policies", index)
    return created


def _check(outcome: object, section: str, index: int) -> None:
    if isinstance(outcome, Rejection):
        raise SeedError(f"{section}[{index}]: {outcome.error}: {outcome.message}")


async def apply_seed(store: Store, seed: Seed, clock: Clock) -> list[CreatedKey]:
    """Apply ``seed`` in one transaction; returns the keys created now (with secrets)."""
    fresh = [new_secret() for _ in seed.api_keys]
    now = clock.now_ms()
    return await store.atomic(lambda tx: _apply(tx, seed, now, fresh))
