"""The async Cycles client: one method per runtime endpoint, each returning a ``Result``.

The client holds no business rules. It validates a request, asks
:mod:`cycleguard._core._exchange` for the HTTP request, hands it to the
transport and asks ``_exchange`` again what the answer means.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Self, TypeVar, final, overload

from attrs import AttrsInstance
from returns.result import Failure, Result, Success

from cycleguard._config import ClientConfig
from cycleguard._core import _exchange
from cycleguard._core._errors import (
    CyclesError,
    ValidationFailed,
    ValidationIssue,
)
from cycleguard._core._models import (
    SUBJECT_LEVELS,
    Action,
    Amount,
    Balance,
    BalanceResponse,
    CommitRequest,
    CommitResponse,
    DecisionRequest,
    DecisionResponse,
    EventCreateRequest,
    EventCreateResponse,
    OveragePolicy,
    ReleaseRequest,
    ReleaseResponse,
    Reservation,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
    ReservationStatus,
    ReservationSummary,
    SortBy,
    SortDirection,
    StandardMetrics,
    Subject,
)
from cycleguard._core._result import and_then
from cycleguard._core._validation import list_limit_issues, reservation_id_issues, validate
from cycleguard._version import user_agent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection
    from datetime import datetime
    from types import TracebackType

    from cycleguard._core._exchange import Endpoint, Query
    from cycleguard._core._http import Headers
    from cycleguard._core._json import JsonObject
    from cycleguard._settlement import Settlement
    from cycleguard.transports import Transport

T = TypeVar("T", bound=AttrsInstance)
logger = logging.getLogger("cycleguard")


def new_idempotency_key() -> str:
    """A fresh random idempotency key."""
    return os.urandom(16).hex()


def _subject_query(subject: Subject | None) -> dict[str, str | None]:
    if subject is None:
        return {}
    return dict(zip(SUBJECT_LEVELS, _subject_values(subject), strict=True))


def _subject_values(subject: Subject) -> tuple[str | None, ...]:
    return (
        subject.tenant,
        subject.workspace,
        subject.app,
        subject.workflow,
        subject.agent,
        subject.toolset,
    )


def _default_transport(config: ClientConfig) -> Transport:
    from cycleguard.transports.h11 import H11Transport

    return H11Transport(config.base_url, timeouts=config.timeouts)


@final
class CyclesClient:
    """An async client for the Cycles runtime protocol, on asyncio or trio.

    Every call returns ``Result[<answer>, CyclesError]`` and never raises for
    what the server or the network did. Requests are validated first: a broken
    rule is a :class:`~cycleguard.errors.ValidationFailed` and nothing is sent.
    Idempotency keys are generated unless given. Closing the client closes its
    transport.

    Example (against an in-process test double)::

        async with CyclesClient(ClientConfig(base_url=url, api_key=key)) as cycles:
            result = await cycles.create_reservation(
                subject=Subject(tenant="acme"),
                action=Action("llm.completion", "openai:gpt-4o-mini"),
                estimate=Amount.tokens(1_500),
            )
    """

    def __init__(self, config: ClientConfig, *, transport: Transport | None = None) -> None:
        """Build a client; without ``transport`` it uses the built-in h11 keep-alive pool."""
        self._config = config
        self._transport = transport if transport is not None else _default_transport(config)
        self._settlement: Settlement | None = None
        self._headers: Headers = (
            ("X-Cycles-API-Key", config.api_key),
            ("User-Agent", user_agent()),
            ("Accept", "application/json"),
        )

    @classmethod
    def from_env(cls, *, prefix: str = "CYCLES_", transport: Transport | None = None) -> Self:
        """Build a client from ``CYCLES_*`` environment variables.

        See :meth:`ClientConfig.from_env` for the variables read.
        """
        return cls(ClientConfig.from_env(prefix), transport=transport)

    def __repr__(self) -> str:
        return f"CyclesClient(base_url={self._config.base_url!r})"

    @property
    def config(self) -> ClientConfig:
        """The configuration this client was built with."""
        return self._config

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def settlement(self) -> Settlement:
        """This client's durable settlement, created on first use.

        Leases and ``guarded`` calls settle through it unless given another. Its
        journal follows ``CYCLES_JOURNAL_ENABLED`` / ``CYCLES_JOURNAL_DIR``. Call
        ``await client.settlement.replay()`` at start to settle what an earlier
        process left, and run ``client.settlement.run_sweeper`` in a task group to
        retry what is pending; :meth:`aclose` drains it (bounded) before closing.
        """
        if self._settlement is None:
            from cycleguard._settlement import Settlement  # imports this module

            self._settlement = Settlement(self)
        return self._settlement

    async def aclose(self) -> None:
        """Drain pending settlement (bounded), then close the transport.

        Safe to call more than once.
        """
        try:
            if self._settlement is not None:
                await self._settlement.drain()
        finally:
            await self._transport.aclose()

    # The exchange ----------------------------------------------------------------

    async def _exchange(
        self,
        endpoint: Endpoint[T],
        *,
        body: object | None = None,
        idempotency_key: str | None = None,
        reservation_id: str | None = None,
        query: Query | None = None,
    ) -> Result[T, CyclesError]:
        url = _exchange.build_url(
            self._config.base_url, endpoint, reservation_id=reservation_id, query=query or {}
        )
        request = _exchange.build_request(endpoint, url, self._headers, body, idempotency_key)
        sent = await self._transport.send(request)
        if not isinstance(sent, Success):
            logger.debug("%s %s failed: %s", endpoint.method, endpoint.operation, sent.failure())
            return Failure(sent.failure())
        response = sent.unwrap()
        logger.debug("%s %s -> %d", endpoint.method, endpoint.operation, response.status)
        return _exchange.interpret(response, endpoint)

    @overload
    async def send(self, request: DecisionRequest) -> Result[DecisionResponse, CyclesError]: ...
    @overload
    async def send(
        self, request: ReservationCreateRequest
    ) -> Result[ReservationCreateResponse, CyclesError]: ...
    @overload
    async def send(
        self, request: EventCreateRequest
    ) -> Result[EventCreateResponse, CyclesError]: ...
    @overload
    async def send(
        self, request: CommitRequest, *, reservation_id: str
    ) -> Result[CommitResponse, CyclesError]: ...
    @overload
    async def send(
        self, request: ReleaseRequest, *, reservation_id: str
    ) -> Result[ReleaseResponse, CyclesError]: ...
    @overload
    async def send(
        self, request: ReservationExtendRequest, *, reservation_id: str
    ) -> Result[ReservationExtendResponse, CyclesError]: ...

    async def send(
        self,
        request: DecisionRequest
        | ReservationCreateRequest
        | EventCreateRequest
        | CommitRequest
        | ReleaseRequest
        | ReservationExtendRequest,
        *,
        reservation_id: str | None = None,
    ) -> Result[
        DecisionResponse
        | ReservationCreateResponse
        | EventCreateResponse
        | CommitResponse
        | ReleaseResponse
        | ReservationExtendResponse,
        CyclesError,
    ]:
        """Send a fully built request exactly as given (no defaults merged).

        This is the primitive the lifecycle and the settlement journal use to
        repeat a request with its original idempotency key. A DENY decision from
        decide or a dry run is a :class:`~cycleguard.errors.Denied` failure.
        """
        issues = validate(request)
        key = request.idempotency_key
        match request:
            case DecisionRequest():
                if issues:
                    return Failure(ValidationFailed(issues))
                decided = await self._exchange(_exchange.DECIDE, body=request, idempotency_key=key)
                return and_then(decided, _exchange.decision_outcome)
            case ReservationCreateRequest():
                if issues:
                    return Failure(ValidationFailed(issues))
                created = await self._exchange(
                    _exchange.CREATE_RESERVATION, body=request, idempotency_key=key
                )
                return and_then(created, _exchange.dry_run_outcome) if request.dry_run else created
            case EventCreateRequest():
                if issues:
                    return Failure(ValidationFailed(issues))
                return await self._exchange(
                    _exchange.CREATE_EVENT, body=request, idempotency_key=key
                )
            case CommitRequest():
                return await self._post_on_reservation(
                    _exchange.COMMIT_RESERVATION, request, reservation_id, issues
                )
            case ReleaseRequest():
                return await self._post_on_reservation(
                    _exchange.RELEASE_RESERVATION, request, reservation_id, issues
                )
            case ReservationExtendRequest():
                return await self._post_on_reservation(
                    _exchange.EXTEND_RESERVATION, request, reservation_id, issues
                )

    async def _post_on_reservation(
        self,
        endpoint: Endpoint[T],
        request: CommitRequest | ReleaseRequest | ReservationExtendRequest,
        reservation_id: str | None,
        issues: tuple[ValidationIssue, ...],
    ) -> Result[T, CyclesError]:
        if reservation_id is None:
            issues = (*issues, ValidationIssue("reservation_id", "is required"))
        else:
            issues = (*issues, *reservation_id_issues(reservation_id))
        if issues:
            return Failure(ValidationFailed(issues))
        return await self._exchange(
            endpoint,
            body=request,
            idempotency_key=request.idempotency_key,
            reservation_id=reservation_id,
        )

    # Runtime endpoints -----------------------------------------------------------

    def _subject(self, subject: Subject | None) -> Subject:
        defaults = self._config.subject
        if subject is None and defaults.dimensions is None:
            return defaults  # what merging over an empty subject would rebuild
        return (subject or Subject()).merged_over(defaults)

    async def decide(
        self,
        *,
        action: Action,
        estimate: Amount,
        subject: Subject | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[DecisionResponse, CyclesError]:
        """Ask whether ``estimate`` would be allowed, without reserving it.

        A DENY is a :class:`~cycleguard.errors.Denied` failure. Use
        :meth:`create_reservation` when you need the budget held.
        """
        return await self.send(
            DecisionRequest(
                idempotency_key=idempotency_key or new_idempotency_key(),
                subject=self._subject(subject),
                action=action,
                estimate=estimate,
                metadata=metadata,
            )
        )

    def reservation_request(
        self,
        *,
        action: Action,
        estimate: Amount,
        subject: Subject | None = None,
        ttl_ms: int | None = None,
        grace_period_ms: int | None = None,
        overage_policy: OveragePolicy | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
        dry_run: bool = False,
    ) -> ReservationCreateRequest:
        """The create-reservation body this client would send, defaults merged."""
        return ReservationCreateRequest(
            idempotency_key=idempotency_key or new_idempotency_key(),
            subject=self._subject(subject),
            action=action,
            estimate=estimate,
            ttl_ms=ttl_ms,
            grace_period_ms=grace_period_ms,
            overage_policy=overage_policy,
            dry_run=True if dry_run else None,
            metadata=metadata,
        )

    async def create_reservation(
        self,
        *,
        action: Action,
        estimate: Amount,
        subject: Subject | None = None,
        ttl_ms: int | None = None,
        grace_period_ms: int | None = None,
        overage_policy: OveragePolicy | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Reservation, CyclesError]:
        """Reserve ``estimate`` on every budgeted scope of the subject.

        Unset ``ttl_ms``, ``grace_period_ms`` and ``overage_policy`` are left to
        the server's (or tenant's) defaults.
        """
        request = self.reservation_request(
            action=action,
            estimate=estimate,
            subject=subject,
            ttl_ms=ttl_ms,
            grace_period_ms=grace_period_ms,
            overage_policy=overage_policy,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        created = await self.send(request)
        return and_then(created, _exchange.live_reservation)

    async def dry_run_reservation(
        self,
        *,
        action: Action,
        estimate: Amount,
        subject: Subject | None = None,
        ttl_ms: int | None = None,
        grace_period_ms: int | None = None,
        overage_policy: OveragePolicy | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[ReservationCreateResponse, CyclesError]:
        """Evaluate a reservation fully without holding anything (shadow mode).

        A DENY is a :class:`~cycleguard.errors.Denied` failure.
        """
        return await self.send(
            self.reservation_request(
                action=action,
                estimate=estimate,
                subject=subject,
                ttl_ms=ttl_ms,
                grace_period_ms=grace_period_ms,
                overage_policy=overage_policy,
                metadata=metadata,
                idempotency_key=idempotency_key,
                dry_run=True,
            )
        )

    async def commit_reservation(
        self,
        reservation_id: str,
        actual: Amount,
        *,
        metrics: StandardMetrics | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[CommitResponse, CyclesError]:
        """Charge ``actual`` and return the rest of the reservation to the budget."""
        return await self.send(
            CommitRequest(
                idempotency_key=idempotency_key or new_idempotency_key(),
                actual=actual,
                metrics=metrics,
                metadata=metadata,
            ),
            reservation_id=reservation_id,
        )

    async def release_reservation(
        self,
        reservation_id: str,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[ReleaseResponse, CyclesError]:
        """Return the whole reservation to the budget."""
        return await self.send(
            ReleaseRequest(idempotency_key=idempotency_key or new_idempotency_key(), reason=reason),
            reservation_id=reservation_id,
        )

    async def extend_reservation(
        self,
        reservation_id: str,
        extend_by_ms: int,
        *,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[ReservationExtendResponse, CyclesError]:
        """Push the reservation's expiry ``extend_by_ms`` past its current expiry."""
        return await self.send(
            ReservationExtendRequest(
                idempotency_key=idempotency_key or new_idempotency_key(),
                extend_by_ms=extend_by_ms,
                metadata=metadata,
            ),
            reservation_id=reservation_id,
        )

    async def create_event(
        self,
        *,
        action: Action,
        actual: Amount,
        subject: Subject | None = None,
        overage_policy: OveragePolicy | None = None,
        metrics: StandardMetrics | None = None,
        client_time_ms: int | None = None,
        metadata: JsonObject | None = None,
        idempotency_key: str | None = None,
    ) -> Result[EventCreateResponse, CyclesError]:
        """Record spend that had no reservation (a direct debit)."""
        return await self.send(
            EventCreateRequest(
                idempotency_key=idempotency_key or new_idempotency_key(),
                subject=self._subject(subject),
                action=action,
                actual=actual,
                overage_policy=overage_policy,
                metrics=metrics,
                client_time_ms=client_time_ms,
                metadata=metadata,
            )
        )

    async def get_reservation(self, reservation_id: str) -> Result[ReservationDetail, CyclesError]:
        """One reservation. An expired one is a :class:`~cycleguard.errors.ReservationExpired`."""
        issues = reservation_id_issues(reservation_id)
        if issues:
            return Failure(ValidationFailed(issues))
        return await self._exchange(_exchange.GET_RESERVATION, reservation_id=reservation_id)

    async def list_reservations(
        self,
        *,
        subject: Subject | None = None,
        status: ReservationStatus | None = None,
        idempotency_key: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        expires_from: datetime | None = None,
        expires_to: datetime | None = None,
        finalized_from: datetime | None = None,
        finalized_to: datetime | None = None,
        sort_by: SortBy | None = None,
        sort_dir: SortDirection | None = None,
        include: Collection[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Result[ReservationListResponse, CyclesError]:
        """One page of the tenant's reservations; ``subject`` fields filter (no defaults merged)."""
        issues = list_limit_issues(limit)
        if issues:
            return Failure(ValidationFailed(issues))
        query: Query = {
            **_subject_query(subject),
            "status": status,
            "idempotency_key": idempotency_key,
            "from": created_from,
            "to": created_to,
            "expires_from": expires_from,
            "expires_to": expires_to,
            "finalized_from": finalized_from,
            "finalized_to": finalized_to,
            "sort_by": sort_by,
            "sort_dir": sort_dir,
            "include": ",".join(include) or None,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._exchange(_exchange.LIST_RESERVATIONS, query=query)

    async def iter_reservations(
        self,
        *,
        subject: Subject | None = None,
        status: ReservationStatus | None = None,
        sort_by: SortBy | None = None,
        sort_dir: SortDirection | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Result[ReservationSummary, CyclesError]]:
        """Every matching reservation, following ``next_cursor``; a failure ends the iteration."""
        cursor: str | None = None
        while True:
            page = await self.list_reservations(
                subject=subject,
                status=status,
                sort_by=sort_by,
                sort_dir=sort_dir,
                limit=limit,
                cursor=cursor,
            )
            if not isinstance(page, Success):
                yield Failure(page.failure())
                return
            listing = page.unwrap()
            for row in listing.reservations:
                yield Success(row)
            cursor = listing.next_cursor
            if not cursor or listing.has_more is False:
                return

    async def get_balances(
        self,
        *,
        subject: Subject | None = None,
        include_children: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Result[BalanceResponse, CyclesError]:
        """Balances of the budgeted scopes matching ``subject`` (merged over the defaults)."""
        merged = self._subject(subject)
        issues = list_limit_issues(limit)
        if not merged.levels():
            issues = (*issues, ValidationIssue("subject", "balances need at least one filter"))
        if issues:
            return Failure(ValidationFailed(issues))
        query: Query = {
            **_subject_query(merged),
            "include_children": include_children,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._exchange(_exchange.GET_BALANCES, query=query)

    async def iter_balances(
        self,
        *,
        subject: Subject | None = None,
        include_children: bool | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Result[Balance, CyclesError]]:
        """Every matching balance, following ``next_cursor``; a failure ends the iteration."""
        cursor: str | None = None
        while True:
            page = await self.get_balances(
                subject=subject, include_children=include_children, limit=limit, cursor=cursor
            )
            if not isinstance(page, Success):
                yield Failure(page.failure())
                return
            listing = page.unwrap()
            for balance in listing.balances:
                yield Success(balance)
            cursor = listing.next_cursor
            if not cursor or listing.has_more is False:
                return
