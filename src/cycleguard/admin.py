"""A typed async client for the Cycles admin plane: tenants, API keys, budgets, policies.

:class:`AdminClient` mirrors :class:`~cycleguard.CyclesClient`: every call
returns ``Result[JsonObject, CyclesError]`` and never raises for what the
server or the network did. Requests are the attrs models re-exported here,
checked with the same field rules the server applies before anything is
sent (a broken rule is a :class:`~cycleguard.errors.ValidationFailed`). The
success value is the decoded JSON object the server answered, as the
governance-admin spec shapes it.

Tenants and API keys need the admin key (``X-Admin-API-Key``). Budgets and
policies take the admin key, naming the tenant, or a tenant's own API key
(``X-Cycles-API-Key``); freezing, unfreezing and updating a budget take the
admin key only. Neither key ever shows in a ``repr``, a log line or an error.

Example (against a running ``cycleguard serve``)::

    async with AdminClient("http://127.0.0.1:7878", admin_key=admin_key) as admin:
        await admin.create_tenant(TenantCreateRequest(tenant_id="acme", name="Acme"))
        created = await admin.create_api_key(ApiKeyCreateRequest(tenant_id="acme", name="bot"))
        secret = created.unwrap()["key_secret"]  # shown this once only
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Self, cast, final
from urllib.parse import quote, urlencode

import attrs
from returns.result import Failure, Result, Success

from cycleguard._core import _exchange, _wire
from cycleguard._core._errors import CyclesError, InvalidResponse, ValidationFailed
from cycleguard._core._http import HttpRequest, Timeouts
from cycleguard._version import user_agent
from cycleguard.server.admin_models import (
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    BudgetFundingRequest,
    BudgetStatusTransitionRequest,
    BudgetUpdateRequest,
    ExpiryPolicy,
    PolicyCreateRequest,
    PolicyUpdateRequest,
    TenantCreateRequest,
    TenantUpdateRequest,
    issues,
)
from cycleguard.server.ledger import FundingOperation
from cycleguard.server.records import PolicyStatus, RolloverPolicy, TenantStatus, TtlOverride

if TYPE_CHECKING:
    from types import TracebackType

    from cycleguard._core._http import Headers
    from cycleguard._core._json import JsonObject
    from cycleguard._core._models import Unit
    from cycleguard.server.admin_models import AdminRequest
    from cycleguard.transports import Transport

__all__ = (
    "AdminClient",
    "TenantCreateRequest",
    "TenantUpdateRequest",
    "ApiKeyCreateRequest",
    "BudgetCreateRequest",
    "BudgetUpdateRequest",
    "BudgetFundingRequest",
    "BudgetStatusTransitionRequest",
    "PolicyCreateRequest",
    "PolicyUpdateRequest",
    "ExpiryPolicy",
    "FundingOperation",
    "PolicyStatus",
    "RolloverPolicy",
    "TenantStatus",
    "TtlOverride",
)

_logger = logging.getLogger("cycleguard")

# Query parameters; unset (None) ones are left out.
_Query = Mapping[str, str | int | None]

# Which credential a route takes: the admin key only, or the admin key when the
# client has one and else the tenant's API key.
_Credential = Literal["admin", "either"]


def _scope_tenant(scope: str) -> str | None:
    """The tenant a scope path (or pattern) starts with, if it names one.

    >>> _scope_tenant("tenant:acme/agent:bot"), _scope_tenant("tenant:*/agent:bot")
    ('acme', None)
    """
    level, _, value = scope.split("/", 1)[0].partition(":")
    return value if level == "tenant" and value and value != "*" else None


@final
class AdminClient:
    """An async client for the admin plane of a Cycles server, on asyncio or trio.

    ``admin_key`` is sent as ``X-Admin-API-Key`` (tenants, API keys, and budgets
    and policies of any tenant); ``api_key`` as ``X-Cycles-API-Key`` for the
    budget and policy calls a tenant key may make, when no admin key is set.
    Without ``transport`` the client uses the built-in h11 keep-alive pool with
    ``timeouts``; closing the client closes its transport.
    """

    def __init__(
        self,
        base_url: str,
        *,
        admin_key: str | None = None,
        api_key: str | None = None,
        transport: Transport | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        """Build a client for the server at ``base_url`` (keys are never shown)."""
        if transport is None:
            from cycleguard.transports.h11 import H11Transport

            transport = H11Transport(base_url, timeouts=timeouts)
        self._base_url = base_url.rstrip("/")
        self._transport = transport
        self._admin_key = admin_key
        self._api_key = api_key
        self._headers: Headers = (("User-Agent", user_agent()), ("Accept", "application/json"))

    def __repr__(self) -> str:
        return f"AdminClient(base_url={self._base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport. Safe to call more than once."""
        await self._transport.aclose()

    # The exchange ----------------------------------------------------------------

    def _credentials(self, credential: _Credential) -> Headers:
        if self._admin_key is not None:
            return (("X-Admin-API-Key", self._admin_key),)
        if credential == "either" and self._api_key is not None:
            return (("X-Cycles-API-Key", self._api_key),)
        # Sent without a key, the server answers 401 naming the header it wants.
        return ()

    async def _call(
        self,
        method: str,
        path: str,
        credential: _Credential,
        *,
        query: _Query | None = None,
        body: AdminRequest | None = None,
    ) -> Result[JsonObject, CyclesError]:
        if body is not None:
            found = issues(body)
            if found:
                return Failure(ValidationFailed(found))
        url = self._base_url + path
        pairs = [(name, str(value)) for name, value in (query or {}).items() if value is not None]
        if pairs:
            url += "?" + urlencode(pairs)
        headers = self._headers + self._credentials(credential)
        payload = b""
        if body is not None:
            payload = _wire.encode(body)
            headers += (("Content-Type", "application/json"),)
        sent = await self._transport.send(HttpRequest(method, url, headers, payload))
        if not isinstance(sent, Success):
            _logger.debug("%s %s failed: %s", method, path, sent.failure())
            return Failure(sent.failure())
        response = sent.unwrap()
        _logger.debug("%s %s -> %d", method, path, response.status)
        meta = _exchange.response_meta(response)
        if response.status >= 400:
            return Failure(_exchange.server_error(response, meta))
        parsed = _wire.parse_json(response.body)
        if 200 <= response.status < 300 and isinstance(parsed, Success):
            document = parsed.unwrap()
            if isinstance(document, dict):
                return Success(cast("JsonObject", document))
        return Failure(
            InvalidResponse(
                message=f"{method} {path}: HTTP {response.status} without a JSON object body",
                status=response.status,
                request_id=meta.request_id,
                trace_id=meta.trace_id,
            )
        )

    def _tenant_default(self, named: str | None, scope: str) -> str | None:
        """The ``tenant_id`` to send: the one given, else (admin key only) the scope's."""
        if named is not None or self._admin_key is None:
            return named
        return _scope_tenant(scope)

    # Tenants ---------------------------------------------------------------------

    async def create_tenant(self, request: TenantCreateRequest) -> Result[JsonObject, CyclesError]:
        """Create a tenant; an existing ``tenant_id`` answers with the tenant as it is."""
        return await self._call("POST", "/v1/admin/tenants", "admin", body=request)

    async def list_tenants(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Result[JsonObject, CyclesError]:
        """One page of tenants (``tenants``, ``has_more``, ``next_cursor``), newest first."""
        query: _Query = {"status": status, "limit": limit, "cursor": cursor}
        return await self._call("GET", "/v1/admin/tenants", "admin", query=query)

    async def get_tenant(self, tenant_id: str) -> Result[JsonObject, CyclesError]:
        """One tenant."""
        return await self._call("GET", f"/v1/admin/tenants/{quote(tenant_id, safe='')}", "admin")

    async def update_tenant(
        self, tenant_id: str, request: TenantUpdateRequest
    ) -> Result[JsonObject, CyclesError]:
        """Change a tenant; ``status=CLOSED`` closes it for good (keys revoked, holds released)."""
        path = f"/v1/admin/tenants/{quote(tenant_id, safe='')}"
        return await self._call("PATCH", path, "admin", body=request)

    # API keys --------------------------------------------------------------------

    async def create_api_key(self, request: ApiKeyCreateRequest) -> Result[JsonObject, CyclesError]:
        """Mint a key; the answer's ``key_secret`` is the secret, shown this once only."""
        return await self._call("POST", "/v1/admin/api-keys", "admin", body=request)

    async def list_api_keys(
        self,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Result[JsonObject, CyclesError]:
        """One page of keys (``keys``), newest first; never a secret."""
        query: _Query = {"tenant_id": tenant_id, "status": status, "limit": limit, "cursor": cursor}
        return await self._call("GET", "/v1/admin/api-keys", "admin", query=query)

    async def revoke_api_key(
        self, key_id: str, *, reason: str | None = None
    ) -> Result[JsonObject, CyclesError]:
        """Revoke a key at once: its next call is refused."""
        path = f"/v1/admin/api-keys/{quote(key_id, safe='')}"
        return await self._call("DELETE", path, "admin", query={"reason": reason})

    # Budgets ---------------------------------------------------------------------

    async def create_budget(self, request: BudgetCreateRequest) -> Result[JsonObject, CyclesError]:
        """Open a budget ledger for ``(scope, unit)``.

        With the admin key an unset ``tenant_id`` is taken from the scope
        (``tenant:acme/...`` acts for ``acme``); with a tenant key leave it unset.
        """
        tenant_id = self._tenant_default(request.tenant_id, request.scope)
        request = attrs.evolve(request, tenant_id=tenant_id)
        return await self._call("POST", "/v1/admin/budgets", "either", body=request)

    async def list_budgets(
        self,
        *,
        tenant_id: str | None = None,
        scope_prefix: str | None = None,
        unit: Unit | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Result[JsonObject, CyclesError]:
        """One page of budgets (``ledgers``) by scope; the admin key without
        ``tenant_id`` lists every tenant's."""
        query: _Query = {
            "tenant_id": tenant_id,
            "scope_prefix": scope_prefix,
            "unit": unit.value if unit is not None else None,
            "status": status,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._call("GET", "/v1/admin/budgets", "either", query=query)

    async def lookup_budget(self, scope: str, unit: Unit) -> Result[JsonObject, CyclesError]:
        """The budget of exactly ``(scope, unit)``."""
        query: _Query = {"scope": scope, "unit": unit.value}
        return await self._call("GET", "/v1/admin/budgets/lookup", "either", query=query)

    async def update_budget(
        self, scope: str, unit: Unit, request: BudgetUpdateRequest
    ) -> Result[JsonObject, CyclesError]:
        """Change a budget's overdraft limit, overage policy or metadata (admin key)."""
        query: _Query = {"scope": scope, "unit": unit.value}
        return await self._call("PATCH", "/v1/admin/budgets", "admin", query=query, body=request)

    async def fund_budget(
        self,
        scope: str,
        unit: Unit,
        request: BudgetFundingRequest,
        *,
        tenant_id: str | None = None,
    ) -> Result[JsonObject, CyclesError]:
        """CREDIT, DEBIT, RESET, REPAY_DEBT or RESET_SPENT a budget; answers before and after.

        With the admin key the server wants the owning tenant too; it defaults
        to the tenant the scope starts with.
        """
        query: _Query = {
            "scope": scope,
            "unit": unit.value,
            "tenant_id": self._tenant_default(tenant_id, scope),
        }
        path = "/v1/admin/budgets/fund"
        return await self._call("POST", path, "either", query=query, body=request)

    async def freeze_budget(
        self, scope: str, unit: Unit, request: BudgetStatusTransitionRequest | None = None
    ) -> Result[JsonObject, CyclesError]:
        """ACTIVE to FROZEN: new holds are refused until it is unfrozen (admin key)."""
        return await self._transition("freeze", scope, unit, request)

    async def unfreeze_budget(
        self, scope: str, unit: Unit, request: BudgetStatusTransitionRequest | None = None
    ) -> Result[JsonObject, CyclesError]:
        """FROZEN back to ACTIVE (admin key)."""
        return await self._transition("unfreeze", scope, unit, request)

    async def _transition(
        self,
        action: Literal["freeze", "unfreeze"],
        scope: str,
        unit: Unit,
        request: BudgetStatusTransitionRequest | None,
    ) -> Result[JsonObject, CyclesError]:
        query: _Query = {"scope": scope, "unit": unit.value}
        body = request if request is not None else BudgetStatusTransitionRequest()
        path = f"/v1/admin/budgets/{action}"
        return await self._call("POST", path, "admin", query=query, body=body)

    # Policies --------------------------------------------------------------------

    async def create_policy(self, request: PolicyCreateRequest) -> Result[JsonObject, CyclesError]:
        """Add a policy (caps, overage, TTL overrides) for scopes matching its pattern.

        With the admin key an unset ``tenant_id`` is taken from a pattern that
        starts with ``tenant:<id>``.
        """
        tenant_id = self._tenant_default(request.tenant_id, request.scope_pattern)
        request = attrs.evolve(request, tenant_id=tenant_id)
        return await self._call("POST", "/v1/admin/policies", "either", body=request)

    async def list_policies(
        self,
        *,
        tenant_id: str | None = None,
        scope_pattern: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Result[JsonObject, CyclesError]:
        """One page of a tenant's policies (``policies``); the admin key names the tenant."""
        query: _Query = {
            "tenant_id": tenant_id,
            "scope_pattern": scope_pattern,
            "status": status,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._call("GET", "/v1/admin/policies", "either", query=query)

    async def update_policy(
        self, policy_id: str, request: PolicyUpdateRequest
    ) -> Result[JsonObject, CyclesError]:
        """Change any mutable field of a policy."""
        path = f"/v1/admin/policies/{quote(policy_id, safe='')}"
        return await self._call("PATCH", path, "either", body=request)
