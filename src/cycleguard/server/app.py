"""The Starlette application: both planes on one port.

Each handler reads the request, decodes and checks what it can without the
store (body, headers, query), then runs exactly one atomic function on the
store that authenticates the caller and performs the operation. Every
response carries ``X-Request-Id`` and ``X-Cycles-Trace-Id``; refusals use the
protocol's error envelope. The app runs on asyncio or trio (anyio only),
under uvicorn or in-process through an ASGI transport.

The runtime plane's POST endpoints (decide, reserve, commit, release, extend,
events) carry the load, so the app answers them straight from the ASGI
call, without Starlette's middleware, routing, ``Request`` and ``Response``
(about a tenth of a request's cost). Their handlers take the few headers and
the body they read, so the same handler also serves the Starlette route,
which takes over when that shortcut does not apply: a path that needs
Starlette's routing (a ``root_path``, a 404, a 405) or an app given
middleware with ``add_middleware``.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar, final

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from cycleguard._core._errors import ErrorCode
from cycleguard._core._models import (
    CommitRequest,
    DecisionRequest,
    EventCreateRequest,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
)
from cycleguard.server import admin, runtime
from cycleguard.server.admin_models import (
    AdminRequest,
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    BudgetFundingRequest,
    BudgetStatusTransitionRequest,
    BudgetUpdateRequest,
    PolicyCreateRequest,
    PolicyUpdateRequest,
    TenantCreateRequest,
    TenantUpdateRequest,
    issues,
)
from cycleguard.server.auth import (
    AdminCaller,
    AdminPrincipal,
    Caller,
    InvalidCaller,
    KeyCaller,
    NoCaller,
    Principal,
    TenantPrincipal,
    admin_key_matches,
    authenticate,
    hash_secret,
    new_secret,
)
from cycleguard.server.clock import Clock, SystemClock
from cycleguard.server.http import (
    check_idempotency_header,
    check_reservation_id,
    decode_body,
    decode_request,
    invalid,
    raw_response,
    read_body,
    render,
    request_context,
    runtime_headers,
)
from cycleguard.server.queries import parse_balance_query, parse_reservation_query
from cycleguard.server.records import Rejection, Reply, rejection
from cycleguard.server.stores import StoreFailedError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.types import ExceptionHandler, Lifespan, Receive, Scope, Send

    from cycleguard._core._validation import Request as ProtocolRequest
    from cycleguard.server.stores import Store, Tx

__all__ = ("CyclesServer", "create_app")

log: logging.Logger = logging.getLogger("cycleguard.server")

T = TypeVar("T")
P = TypeVar("P", bound="ProtocolRequest")
A = TypeVar("A", bound="AdminRequest")
Outcome = Reply | Rejection
if TYPE_CHECKING:
    _RuntimePost = Callable[[Mapping[str, str], bytes, str], Awaitable[Outcome]]
    """A runtime POST handler: (headers by lower-case name, body, reservation id or "")."""

_RESERVATIONS = "/v1/reservations/"


def _ids() -> str:
    """A random (version 4) UUID as ``str(uuid.uuid4())`` writes it, without building a UUID."""
    value = int.from_bytes(os.urandom(16), "big")
    value = value & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@final
class CyclesServer:
    """A Cycles server over one store: build it, then serve :attr:`app`.

    ``open_store`` is entered when the app starts (ASGI lifespan, or
    :meth:`running`) and left when it stops. ``admin_key`` enables the admin
    plane; without it every admin call answers 401. ``sweep_interval`` is the
    seconds between expiry sweeps (``None``: no background sweeper).
    """

    def __init__(
        self,
        *,
        open_store: Callable[[], AbstractAsyncContextManager[Store]],
        clock: Clock | None = None,
        admin_key: str | None = None,
        sweep_interval: float | None = 1.0,
        new_id: Callable[[], str] = _ids,
    ) -> None:
        self._open_store = open_store
        self._clock: Clock = clock or SystemClock()
        self._admin_key = admin_key
        self._sweep_interval = sweep_interval
        self._new_id = new_id
        self._store: Store | None = None
        self._posts: dict[str, _RuntimePost] = {
            "/v1/decide": self.decide,
            "/v1/reservations": self.create_reservation,
            "/v1/events": self.create_event,
        }
        self._settlements: dict[str, _RuntimePost] = {
            "commit": self.commit,
            "release": self.release,
            "extend": self.extend,
        }
        self.app: Starlette = _App(
            self._runtime_post,
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={HTTPException: self._http_exception},
        )

    # Lifecycle -------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store; only while the server runs."""
        if self._store is None:
            raise RuntimeError("the server is not running (enter its lifespan first)")
        return self._store

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[CyclesServer]:
        """Open the store and run the sweeper for the ``async with`` block."""
        async with self._open_store() as store:
            self._store = store
            try:
                # The sweeper has stopped before the store goes: a sweep already due when
                # the block ends still finds the store.
                async with anyio.create_task_group() as group:
                    if self._sweep_interval is not None:
                        group.start_soon(self._sweep_forever, self._sweep_interval)
                    try:
                        yield self
                    finally:
                        group.cancel_scope.cancel()
            finally:
                self._store = None

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncGenerator[None]:
        async with self.running():
            yield

    async def sweep_once(self) -> runtime.SweepReport:
        """Expire lapsed reservations, remove finished ones past their retention and
        purge stale idempotency records, once."""
        now = self._clock.now_ms()
        return await self.store.atomic(lambda tx: runtime.sweep(tx, now))

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            try:
                report = await self.sweep_once()
            except StoreFailedError:
                log.exception("expiry sweep stopped: the store failed")
                return
            if report.expired or report.purged or report.removed:
                log.info(
                    "sweep expired %d reservation(s), removed %d finished past retention, "
                    "purged %d idempotency record(s)",
                    report.expired,
                    report.removed,
                    report.purged,
                )

    # Plumbing ----------------------------------------------------------------------

    async def _respond(self, request: Request, work: Callable[[Tx], Outcome]) -> Response:
        context = request_context(request.headers)
        outcome = await self._run(work, f"{request.method} {request.url.path}")
        return render(outcome, context)

    async def _run(self, work: Callable[[Tx], Outcome], where: str) -> Outcome:
        """Run ``work`` on the store; a failure is answered with the error envelope."""
        try:
            return await self.store.atomic(work)
        except StoreFailedError:
            log.exception("store failure")
            return rejection(ErrorCode.INTERNAL_ERROR, "The server's store failed")
        except Exception:  # the edge answers every failure with the error envelope
            log.exception("unexpected error handling %s", where)
            return rejection(ErrorCode.INTERNAL_ERROR, "Internal error")

    def _runtime_post(self, scope: Scope) -> tuple[_RuntimePost, str] | None:
        """The runtime POST handler for an ASGI call and the reservation id in its path,
        when the call can skip Starlette (see the module docstring)."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        handler = self._posts.get(path)
        if handler is not None:
            return handler, ""
        if path.startswith(_RESERVATIONS):
            reservation_id, _, action = path[len(_RESERVATIONS) :].partition("/")
            handler = self._settlements.get(action)
            if handler is not None and reservation_id:
                return handler, reservation_id
        return None

    def _post_route(self, path: str, handler: _RuntimePost) -> Route:
        """The Starlette route of a runtime POST endpoint (when the shortcut does not apply)."""

        async def endpoint(request: Request) -> Response:
            context = request_context(request.headers)
            reservation_id = str(request.path_params.get("reservation_id", ""))
            return render(
                await handler(request.headers, await request.body(), reservation_id), context
            )

        return Route(path, endpoint, methods=["POST"])

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        context = request_context(request.headers)
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            outcome = rejection(ErrorCode.NOT_FOUND, f"No such endpoint: {request.url.path}")
        elif status == 405:
            outcome = Rejection(
                status=405,
                error=ErrorCode.INVALID_REQUEST.value,
                message=f"Method {request.method} is not allowed on {request.url.path}",
            )
        else:
            outcome = Rejection(
                status=status, error=ErrorCode.INVALID_REQUEST.value, message=str(exc)
            )
        return render(outcome, context)

    def _caller(self, headers: Mapping[str, str], *, admin: bool) -> Caller:
        admin_key = headers.get("x-admin-api-key")
        if admin and admin_key is not None:
            if admin_key_matches(self._admin_key, admin_key):
                return AdminCaller()
            if not self._admin_key:
                return InvalidCaller("The admin API is disabled: no admin key is configured")
            return InvalidCaller("Invalid admin API key")
        api_key = headers.get("x-cycles-api-key")
        if api_key:
            return KeyCaller(hash_secret(api_key))
        return NoCaller("Missing API key (X-Cycles-API-Key)")

    def _guard(
        self,
        caller: Caller,
        parsed: T | Rejection,
        now: int,
        permission: str | None,
        op: Callable[[Tx, Principal, T], Outcome],
        *,
        denied_code: str = ErrorCode.FORBIDDEN.value,
    ) -> Callable[[Tx], Outcome]:
        def run(tx: Tx) -> Outcome:
            principal = authenticate(tx, caller, now)
            if isinstance(principal, Rejection):
                return principal
            if (
                permission is not None
                and isinstance(principal, TenantPrincipal)
                and not principal.may(permission)
            ):
                return Rejection(
                    status=403,
                    error=denied_code,
                    message=f"The API key lacks the {permission} permission",
                )
            if isinstance(parsed, Rejection):
                return parsed
            return op(tx, principal, parsed)

        return run

    def _tenant_guard(
        self,
        caller: Caller,
        parsed: T | Rejection,
        now: int,
        permission: str,
        op: Callable[[Tx, TenantPrincipal, T], Outcome],
    ) -> Callable[[Tx], Outcome]:
        def tenant_only(tx: Tx, principal: Principal, body: T) -> Outcome:
            if isinstance(principal, AdminPrincipal):
                return rejection(ErrorCode.UNAUTHORIZED, "This endpoint needs X-Cycles-API-Key")
            return op(tx, principal, body)

        return self._guard(caller, parsed, now, permission, tenant_only)

    def _runtime_body(
        self, headers: Mapping[str, str], raw: bytes, cls: type[P]
    ) -> tuple[P | Rejection, str]:
        """The checked body and its idempotency digest ("" when the body is refused)."""
        decoded = decode_request(raw, cls)
        if isinstance(decoded, Rejection):
            return decoded, ""
        checked = check_idempotency_header(headers.get("x-idempotency-key"), decoded.request)
        return checked, decoded.digest

    # Runtime plane -------------------------------------------------------------------

    async def decide(self, headers: Mapping[str, str], raw: bytes, _: str) -> Outcome:
        """``POST /v1/decide``."""
        parsed, digest = self._runtime_body(headers, raw, DecisionRequest)
        now = self._clock.now_ms()
        caller = self._caller(headers, admin=False)
        return await self._run(
            self._tenant_guard(
                caller,
                parsed,
                now,
                "reservations:create",
                lambda tx, p, body: runtime.decide(tx, p, body, digest, now),
            ),
            "POST /v1/decide",
        )

    async def create_reservation(self, headers: Mapping[str, str], raw: bytes, _: str) -> Outcome:
        """``POST /v1/reservations``."""
        parsed, digest = self._runtime_body(headers, raw, ReservationCreateRequest)
        now, new_id = self._clock.now_ms(), self._new_id()
        caller = self._caller(headers, admin=False)
        return await self._run(
            self._tenant_guard(
                caller,
                parsed,
                now,
                "reservations:create",
                lambda tx, p, body: runtime.create_reservation(tx, p, body, digest, now, new_id),
            ),
            "POST /v1/reservations",
        )

    async def list_reservations(self, request: Request) -> Response:
        """``GET /v1/reservations`` (the admin key may list one tenant's)."""
        parsed = parse_reservation_query(request.query_params)
        now = self._clock.now_ms()
        caller = self._caller(request.headers, admin=True)
        return await self._respond(
            request,
            self._guard(
                caller,
                parsed,
                now,
                "reservations:list",
                lambda tx, p, query: runtime.list_reservations(tx, p, query, now),
            ),
        )

    def _reservation_id(self, reservation_id: str) -> str | Rejection:
        refused = check_reservation_id(reservation_id)
        return refused if refused is not None else reservation_id

    async def get_reservation(self, request: Request) -> Response:
        """``GET /v1/reservations/{reservation_id}``."""
        reservation_id = self._reservation_id(str(request.path_params["reservation_id"]))
        now = self._clock.now_ms()
        caller = self._caller(request.headers, admin=True)
        return await self._respond(
            request,
            self._guard(
                caller,
                reservation_id,
                now,
                "reservations:list",
                lambda tx, p, rid: runtime.get_reservation(tx, p, rid, now),
            ),
        )

    async def _settle(
        self,
        action: str,
        request: tuple[Mapping[str, str], bytes, str],
        cls: type[P],
        op: Callable[[Tx, Principal, str, P, str, int], Outcome],
        *,
        admin: bool,
    ) -> Outcome:
        """``action`` (``reservations:<action>`` permission) on the reservation in the path;
        ``request`` is what the handler got."""
        headers, raw, path_id = request
        reservation_id = self._reservation_id(path_id)
        parsed, digest = self._runtime_body(headers, raw, cls)
        now = self._clock.now_ms()
        both: tuple[str, P] | Rejection
        if isinstance(reservation_id, Rejection):
            both = reservation_id
        elif isinstance(parsed, Rejection):
            both = parsed
        else:
            both = (reservation_id, parsed)
        caller = self._caller(headers, admin=admin)
        return await self._run(
            self._guard(
                caller,
                both,
                now,
                f"reservations:{action}",
                lambda tx, p, pair: op(tx, p, pair[0], pair[1], digest, now),
            ),
            f"POST {_RESERVATIONS}{path_id}/{action}",
        )

    async def commit(self, headers: Mapping[str, str], raw: bytes, rid: str) -> Outcome:
        """``POST /v1/reservations/{reservation_id}/commit``."""

        def op(
            tx: Tx, p: Principal, rid: str, body: CommitRequest, digest: str, now: int
        ) -> Outcome:
            if isinstance(p, AdminPrincipal):
                return rejection(ErrorCode.UNAUTHORIZED, "This endpoint needs X-Cycles-API-Key")
            return runtime.commit(tx, p, rid, body, digest, now)

        return await self._settle("commit", (headers, raw, rid), CommitRequest, op, admin=False)

    async def release(self, headers: Mapping[str, str], raw: bytes, rid: str) -> Outcome:
        """``POST /v1/reservations/{reservation_id}/release`` (the admin key may too)."""
        return await self._settle(
            "release", (headers, raw, rid), ReleaseRequest, runtime.release, admin=True
        )

    async def extend(self, headers: Mapping[str, str], raw: bytes, rid: str) -> Outcome:
        """``POST /v1/reservations/{reservation_id}/extend``."""

        def op(
            tx: Tx, p: Principal, rid: str, body: ReservationExtendRequest, digest: str, now: int
        ) -> Outcome:
            if isinstance(p, AdminPrincipal):
                return rejection(ErrorCode.UNAUTHORIZED, "This endpoint needs X-Cycles-API-Key")
            return runtime.extend(tx, p, rid, body, digest, now)

        return await self._settle(
            "extend", (headers, raw, rid), ReservationExtendRequest, op, admin=False
        )

    async def balances(self, request: Request) -> Response:
        """``GET /v1/balances``."""
        parsed = parse_balance_query(request.query_params)
        now = self._clock.now_ms()
        caller = self._caller(request.headers, admin=False)
        return await self._respond(
            request, self._tenant_guard(caller, parsed, now, "balances:read", runtime.balances)
        )

    async def create_event(self, headers: Mapping[str, str], raw: bytes, _: str) -> Outcome:
        """``POST /v1/events``."""
        parsed, digest = self._runtime_body(headers, raw, EventCreateRequest)
        now, event_id = self._clock.now_ms(), self._new_id()
        caller = self._caller(headers, admin=False)
        return await self._run(
            self._tenant_guard(
                caller,
                parsed,
                now,
                "reservations:commit",
                lambda tx, p, body: runtime.create_event(tx, p, body, digest, now, event_id),
            ),
            "POST /v1/events",
        )

    async def introspect(self, request: Request) -> Response:
        """``GET /v1/auth/introspect`` (either key)."""
        now = self._clock.now_ms()
        caller = self._caller(request.headers, admin=True)
        return await self._respond(
            request,
            self._guard(caller, None, now, None, lambda tx, p, _: admin.introspect(p)),
        )

    # Admin plane ---------------------------------------------------------------------

    async def _admin_body(
        self, request: Request, cls: type[A], *, optional: bool = False
    ) -> A | Rejection:
        raw = await request.body()
        if optional and not raw.strip():
            raw = b"{}"
        parsed = decode_body(raw, cls)
        if isinstance(parsed, Rejection):
            return parsed
        found = issues(parsed)
        if found:
            return invalid("Invalid request: " + "; ".join(str(i) for i in found), found)
        return parsed

    async def _admin(
        self,
        request: Request,
        parsed: T | Rejection,
        op: Callable[[Tx, Principal, T, int], Outcome],
        *,
        permission: str | None = None,
    ) -> Response:
        """An admin-plane call: the admin key, or (with ``permission``) a tenant key."""
        now = self._clock.now_ms()
        caller = self._caller(request.headers, admin=True)
        if permission is None and not isinstance(caller, AdminCaller):
            caller = (
                caller
                if isinstance(caller, InvalidCaller)
                else InvalidCaller("This endpoint needs X-Admin-API-Key")
            )
        return await self._respond(
            request,
            self._guard(
                caller,
                parsed,
                now,
                permission,
                lambda tx, p, body: op(tx, p, body, now),
                denied_code="INSUFFICIENT_PERMISSIONS",
            ),
        )

    async def create_tenant(self, request: Request) -> Response:
        """``POST /v1/admin/tenants``."""
        parsed = await self._admin_body(request, TenantCreateRequest)
        return await self._admin(
            request, parsed, lambda tx, _, b, now: admin.create_tenant(tx, b, now)
        )

    async def list_tenants(self, request: Request) -> Response:
        """``GET /v1/admin/tenants``."""
        params = dict(request.query_params)
        return await self._admin(request, params, lambda tx, _, q, __: admin.list_tenants(tx, q))

    async def get_tenant(self, request: Request) -> Response:
        """``GET /v1/admin/tenants/{tenant_id}``."""
        tenant_id = str(request.path_params["tenant_id"])
        return await self._admin(
            request, tenant_id, lambda tx, _, tid, __: admin.get_tenant(tx, tid)
        )

    async def update_tenant(self, request: Request) -> Response:
        """``PATCH /v1/admin/tenants/{tenant_id}``."""
        tenant_id = str(request.path_params["tenant_id"])
        parsed = await self._admin_body(request, TenantUpdateRequest)
        return await self._admin(
            request, parsed, lambda tx, _, body, now: admin.update_tenant(tx, tenant_id, body, now)
        )

    async def create_api_key(self, request: Request) -> Response:
        """``POST /v1/admin/api-keys``: the only response that ever shows the secret."""
        parsed = await self._admin_body(request, ApiKeyCreateRequest)
        key_id, secret = "key_" + secrets.token_hex(8), new_secret()
        return await self._admin(
            request,
            parsed,
            lambda tx, _, body, now: admin.create_api_key(tx, body, now, key_id, secret),
        )

    async def list_api_keys(self, request: Request) -> Response:
        """``GET /v1/admin/api-keys``."""
        params = dict(request.query_params)
        return await self._admin(
            request, params, lambda tx, _, q, now: admin.list_api_keys(tx, q, now)
        )

    async def revoke_api_key(self, request: Request) -> Response:
        """``DELETE /v1/admin/api-keys/{key_id}``."""
        key_id = str(request.path_params["key_id"])
        reason = request.query_params.get("reason") or None
        return await self._admin(
            request, key_id, lambda tx, _, kid, now: admin.revoke_api_key(tx, kid, reason, now)
        )

    async def create_budget(self, request: Request) -> Response:
        """``POST /v1/admin/budgets`` (admin key with ``tenant_id``, or a tenant key)."""
        parsed = await self._admin_body(request, BudgetCreateRequest)
        ledger_id = "ldg_" + secrets.token_hex(8)
        return await self._admin(
            request,
            parsed,
            lambda tx, p, body, now: admin.create_budget(tx, p, body, now, ledger_id),
            permission="budgets:write",
        )

    async def list_budgets(self, request: Request) -> Response:
        """``GET /v1/admin/budgets``."""
        params = dict(request.query_params)
        return await self._admin(
            request,
            params,
            lambda tx, p, q, _: admin.list_budgets(tx, p, q),
            permission="budgets:read",
        )

    async def lookup_budget(self, request: Request) -> Response:
        """``GET /v1/admin/budgets/lookup?scope=&unit=``."""
        params = dict(request.query_params)
        return await self._admin(
            request,
            params,
            lambda tx, p, q, _: admin.lookup_budget(tx, p, q),
            permission="budgets:read",
        )

    async def update_budget(self, request: Request) -> Response:
        """``PATCH /v1/admin/budgets?scope=&unit=`` (admin key)."""
        params = dict(request.query_params)
        parsed = await self._admin_body(request, BudgetUpdateRequest)
        return await self._admin(
            request, parsed, lambda tx, _, body, now: admin.update_budget(tx, params, body, now)
        )

    async def fund_budget(self, request: Request) -> Response:
        """``POST /v1/admin/budgets/fund?scope=&unit=``."""
        params = dict(request.query_params)
        parsed = await self._admin_body(request, BudgetFundingRequest)
        digest = "" if isinstance(parsed, Rejection) else runtime.payload_hash(parsed)
        return await self._admin(
            request,
            parsed,
            lambda tx, p, body, now: admin.fund_budget(tx, p, params, body, digest, now),
            permission="budgets:write",
        )

    async def freeze_budget(self, request: Request) -> Response:
        """``POST /v1/admin/budgets/freeze?scope=&unit=`` (admin key)."""
        return await self._transition(request, freeze=True)

    async def unfreeze_budget(self, request: Request) -> Response:
        """``POST /v1/admin/budgets/unfreeze?scope=&unit=`` (admin key)."""
        return await self._transition(request, freeze=False)

    async def _transition(self, request: Request, *, freeze: bool) -> Response:
        params = dict(request.query_params)
        parsed = await self._admin_body(request, BudgetStatusTransitionRequest, optional=True)
        return await self._admin(
            request,
            parsed,
            lambda tx, _, body, now: admin.freeze_budget(tx, params, body, now, freeze=freeze),
        )

    async def create_policy(self, request: Request) -> Response:
        """``POST /v1/admin/policies``."""
        parsed = await self._admin_body(request, PolicyCreateRequest)
        policy_id = "pol_" + secrets.token_hex(8)
        return await self._admin(
            request,
            parsed,
            lambda tx, p, body, now: admin.create_policy(tx, p, body, now, policy_id),
            permission="policies:write",
        )

    async def list_policies(self, request: Request) -> Response:
        """``GET /v1/admin/policies``."""
        params = dict(request.query_params)
        return await self._admin(
            request,
            params,
            lambda tx, p, q, _: admin.list_policies(tx, p, q),
            permission="policies:read",
        )

    async def update_policy(self, request: Request) -> Response:
        """``PATCH /v1/admin/policies/{policy_id}``."""
        policy_id = str(request.path_params["policy_id"])
        parsed = await self._admin_body(request, PolicyUpdateRequest)
        return await self._admin(
            request,
            parsed,
            lambda tx, p, body, now: admin.update_policy(tx, p, policy_id, body, now),
            permission="policies:write",
        )

    def _routes(self) -> list[Route]:
        settle = "/v1/reservations/{reservation_id}/"
        return [
            *(self._post_route(path, handler) for path, handler in self._posts.items()),
            *(self._post_route(settle + name, op) for name, op in self._settlements.items()),
            Route("/v1/reservations", self.list_reservations, methods=["GET"]),
            Route("/v1/reservations/{reservation_id}", self.get_reservation, methods=["GET"]),
            Route("/v1/balances", self.balances, methods=["GET"]),
            Route("/v1/auth/introspect", self.introspect, methods=["GET"]),
            Route("/v1/admin/tenants", self.create_tenant, methods=["POST"]),
            Route("/v1/admin/tenants", self.list_tenants, methods=["GET"]),
            Route("/v1/admin/tenants/{tenant_id}", self.get_tenant, methods=["GET"]),
            Route("/v1/admin/tenants/{tenant_id}", self.update_tenant, methods=["PATCH"]),
            Route("/v1/admin/api-keys", self.create_api_key, methods=["POST"]),
            Route("/v1/admin/api-keys", self.list_api_keys, methods=["GET"]),
            Route("/v1/admin/api-keys/{key_id}", self.revoke_api_key, methods=["DELETE"]),
            Route("/v1/admin/budgets", self.create_budget, methods=["POST"]),
            Route("/v1/admin/budgets", self.list_budgets, methods=["GET"]),
            Route("/v1/admin/budgets", self.update_budget, methods=["PATCH"]),
            Route("/v1/admin/budgets/lookup", self.lookup_budget, methods=["GET"]),
            Route("/v1/admin/budgets/fund", self.fund_budget, methods=["POST"]),
            Route("/v1/admin/budgets/freeze", self.freeze_budget, methods=["POST"]),
            Route("/v1/admin/budgets/unfreeze", self.unfreeze_budget, methods=["POST"]),
            Route("/v1/admin/policies", self.create_policy, methods=["POST"]),
            Route("/v1/admin/policies", self.list_policies, methods=["GET"]),
            Route("/v1/admin/policies/{policy_id}", self.update_policy, methods=["PATCH"]),
        ]


@final
class _App(Starlette):
    """The Starlette app, answering the runtime plane's POST endpoints directly
    (see the module docstring)."""

    def __init__(
        self,
        runtime_post: Callable[[Scope], tuple[_RuntimePost, str] | None],
        *,
        routes: Sequence[BaseRoute],
        lifespan: Lifespan[Starlette],
        exception_handlers: Mapping[type[Exception], ExceptionHandler],
    ) -> None:
        super().__init__(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers)
        self._runtime_post = runtime_post

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = (
            self._runtime_post(scope)
            if scope["type"] == "http" and not self.user_middleware
            else None
        )
        if found is None:
            await super().__call__(scope, receive, send)
            return
        handler, reservation_id = found
        raw = await read_body(receive)
        headers = runtime_headers(scope["headers"])
        context = request_context(headers)
        start, body = raw_response(await handler(headers, raw, reservation_id), context)
        await send(start)
        await send(body)


def create_app(
    *,
    open_store: Callable[[], AbstractAsyncContextManager[Store]],
    clock: Clock | None = None,
    admin_key: str | None = None,
    sweep_interval: float | None = 1.0,
) -> Starlette:
    """A ready-to-serve ASGI app (see :class:`CyclesServer`)."""
    return CyclesServer(
        open_store=open_store, clock=clock, admin_key=admin_key, sweep_interval=sweep_interval
    ).app
