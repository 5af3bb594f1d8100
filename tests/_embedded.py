"""The embedded Cycles server for client-side tests: provisioning, virtual time, faults.

Lifecycle tests run the real server (``cycleguard.server``) over loopback HTTP,
provision tenants, keys and budgets through its admin API, and share one
virtual time line between the client and the server's clock so that TTLs and
heartbeats can span minutes without real sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, cast, final

import anyio
import anyio.lowlevel
import attrs
import httpx
from returns.result import Failure, Result

from cycleguard import ClientConfig, CyclesClient, Subject, Timeouts
from cycleguard.server.clock import ManualClock
from cycleguard.transports import HttpRequest, HttpResponse, Transport
from cycleguard.transports.asgi import AsgiApp, AsgiTransport
from cycleguard.transports.h11 import H11Transport

if TYPE_CHECKING:
    from cycleguard.errors import TransportError

ADMIN_KEY = "lifecycle-admin-key"
ADMIN = {"X-Admin-API-Key": ADMIN_KEY}


@final
@attrs.frozen
class Embedded:
    """A running embedded server and the clock it reads.

    With ``app`` set the server runs in the test's own event loop and is reached
    through the in-process ASGI transport (no socket); otherwise over loopback.
    """

    base_url: str
    clock: ManualClock
    app: AsgiApp | None = None

    def transport(self) -> Transport:
        """A fresh transport to this server."""
        if self.app is not None:
            return AsgiTransport(self.app)
        return H11Transport(self.base_url)

    def http(self) -> httpx.AsyncClient:
        """An httpx client for admin calls."""
        if self.app is not None:
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url=self.base_url, timeout=20
            )
        return httpx.AsyncClient(base_url=self.base_url, timeout=20)


@asynccontextmanager
async def in_process(clock: ManualClock) -> AsyncGenerator[Embedded]:
    """The embedded server (memory store) running in this event loop."""
    from cycleguard.server.app import CyclesServer
    from cycleguard.server.stores.memory import memory_store

    server = CyclesServer(
        open_store=memory_store, clock=clock, admin_key=ADMIN_KEY, sweep_interval=None
    )
    async with server.running():
        yield Embedded("http://cycles.test", clock, server.app)


@final
@attrs.frozen
class Tenant:
    """A provisioned tenant: its id and the secret of a default-permission key."""

    server: Embedded
    tenant_id: str
    api_key: str

    @property
    def subject(self) -> Subject:
        """The tenant's root subject."""
        return Subject(tenant=self.tenant_id)

    def client(
        self,
        transport: Transport | None = None,
        timeouts: Timeouts | None = None,
    ) -> CyclesClient:
        """A client for this tenant (default transport unless one is given)."""
        config = ClientConfig(
            base_url=self.server.base_url,
            api_key=self.api_key,
            subject=self.subject,
            timeouts=timeouts or Timeouts(),
        )
        return CyclesClient(config, transport=transport or self.server.transport())


async def admin(server: Embedded, method: str, path: str, body: object | None = None) -> object:
    """One admin-plane call that must succeed; returns the JSON body."""
    async with server.http() as http:
        response = await http.request(method, path, json=body, headers=ADMIN)
    assert response.status_code in {200, 201}, response.text
    return cast("object", response.json())


async def provision(
    server: Embedded,
    budgets: dict[str, int],
    *,
    unit: str = "TOKENS",
    **tenant_settings: object,
) -> Tenant:
    """A fresh tenant with a key and budgets at ``tenant:<id><suffix>`` for each suffix."""
    tenant_id = "t-" + uuid.uuid4().hex[:12]
    await admin(
        server,
        "POST",
        "/v1/admin/tenants",
        {"tenant_id": tenant_id, "name": "T", **tenant_settings},
    )
    key = await admin(server, "POST", "/v1/admin/api-keys", {"tenant_id": tenant_id, "name": "k"})
    assert isinstance(key, dict)
    for suffix, allocated in budgets.items():
        await admin(
            server,
            "POST",
            "/v1/admin/budgets",
            {
                "tenant_id": tenant_id,
                "scope": f"tenant:{tenant_id}{suffix}",
                "unit": unit,
                "allocated": {"unit": unit, "amount": allocated},
            },
        )
    return Tenant(server, tenant_id, str(cast("dict[str, object]", key)["key_secret"]))


@final
class VirtualClock:
    """Client time that moves only when a test advances it, and moves the server with it.

    Library code sleeps on it (``sleep`` waits for its virtual deadline); the test
    drives time with :meth:`advance`, which wakes sleepers in deadline order and
    lets them run before moving on. Use it with an in-process server, where all
    work happens on this event loop.
    """

    def __init__(self, server_clock: ManualClock) -> None:
        self._server = server_clock
        self._now = 1_000.0
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        """Virtual monotonic seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until virtual time reaches now + ``seconds``."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = anyio.Event()
        self._sleepers.append((self._now + seconds, wake))
        await wake.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its deadline."""
        target = self._now + seconds
        await self._settle()  # let freshly started tasks reach their first sleep
        while True:
            due = [deadline for deadline, _ in self._sleepers if deadline <= target]
            if not due:
                break
            self._move_to(min(due))
            await self._settle()
        self._move_to(target)
        await self._settle()

    def _move_to(self, moment: float) -> None:
        step = round(moment * 1000) - round(self._now * 1000)
        self._now = moment
        self._server.advance(max(0, step))
        ready = [(d, e) for d, e in self._sleepers if d <= moment]
        self._sleepers = [(d, e) for d, e in self._sleepers if d > moment]
        for _, event in ready:
            event.set()

    @staticmethod
    async def _settle() -> None:
        # Everything runs on this loop: enough scheduling rounds let woken tasks
        # finish their in-process requests and go back to sleep.
        for _ in range(200):
            await anyio.lowlevel.checkpoint()


Moment = Literal["before", "after"]
Matcher = Callable[[HttpRequest], bool]


def is_operation(method: str, suffix: str) -> Matcher:
    """Match requests by method and the end of the URL path (query ignored)."""
    return lambda request: request.method == method and request.url.split("?")[0].endswith(suffix)


@final
class FaultyTransport:
    """A real transport with scripted faults, and a log of every request it saw.

    - ``cancel(matcher, moment, scope)``: cancel ``scope`` when the matching request
      is about to be sent (``before``) or right after its answer arrived (``after``).
    - ``fail(matcher, error, times, moment)``: answer the matching request with a
      transport failure instead of (``before``) or after (``after``) sending it.
    """

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.requests: list[HttpRequest] = []
        self._cancels: list[tuple[Matcher, Moment, anyio.CancelScope, list[int]]] = []
        self._failures: list[tuple[Matcher, TransportError, Moment, list[int]]] = []

    def cancel(
        self, matcher: Matcher, moment: Moment, scope: anyio.CancelScope, nth: int = 1
    ) -> None:
        """Cancel ``scope`` at the ``nth`` matching request."""
        self._cancels.append((matcher, moment, scope, [nth]))

    def fail(
        self, matcher: Matcher, error: TransportError, *, times: int = 1, moment: Moment = "before"
    ) -> None:
        """Answer the next ``times`` matching requests with ``error``."""
        self._failures.append((matcher, error, moment, [times]))

    def sent(self, matcher: Matcher) -> list[HttpRequest]:
        """The logged requests ``matcher`` accepts."""
        return [request for request in self.requests if matcher(request)]

    async def _maybe_cancel(self, request: HttpRequest, moment: Moment) -> None:
        for matcher, when, scope, left in self._cancels:
            if when == moment and matcher(request):
                left[0] -= 1
                if left[0] == 0:
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()

    def _failure(self, request: HttpRequest, moment: Moment) -> TransportError | None:
        for matcher, error, when, left in self._failures:
            if when == moment and left[0] > 0 and matcher(request):
                left[0] -= 1
                return error
        return None

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Log, inject what is scripted, otherwise send for real."""
        self.requests.append(request)
        await self._maybe_cancel(request, "before")
        failure = self._failure(request, "before")
        if failure is not None:
            await anyio.lowlevel.checkpoint()
            return Failure(failure)
        result = await self._inner.send(request)
        await self._maybe_cancel(request, "after")
        failure = self._failure(request, "after")
        return Failure(failure) if failure is not None else result

    async def aclose(self) -> None:
        """Close the real transport."""
        await self._inner.aclose()


def faulty(tenant: Tenant) -> FaultyTransport:
    """A faulty transport over the server's usual transport, for ``tenant``."""
    return FaultyTransport(tenant.server.transport())
