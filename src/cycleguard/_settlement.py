"""Settlement that never loses or double-counts spend.

Once a guarded action has returned and its actual amount is known,
:meth:`Settlement.commit` records what it used:

1. The settlement is written to the durable journal **before** the first
   request leaves the process (recovery profile rule D1), in the format the
   official Cycles SDKs share.
2. The commit is sent; every retry re-sends the same body with the **same
   idempotency key**, after exponential backoff with jitter, honouring a 429's
   ``Retry-After`` (clamped to one hour and persisted as an absolute
   ``not_before_ms``, so a restart cannot retry earlier).
3. Only a schema-valid 200 commit (201 event) is success. A lost response, a
   timeout, a 5xx, another 2xx or a malformed body is ambiguous: retried.
4. A 410 / ``RESERVATION_EXPIRED`` commit switches the durable record to event
   mode first, then settles through ``POST /v1/events`` with the same key and
   the original subject, action, actual, metrics and metadata.
5. 401/403 and answers this version cannot classify keep the record and stop
   for this run; nothing ever releases the reservation (the spend happened).

The journal is replayed with :meth:`Settlement.replay` at start, swept
periodically by :meth:`Settlement.run_sweeper`, and flushed on shutdown by the
bounded :meth:`Settlement.drain`.

Deliberate deviation from the official SDKs: a 200/201 whose body carries
unknown *extra* fields counts as success. The runtime spec promises additive
evolution, and the peers' strictness there makes every commit against a newer
server ambiguous until a human intervenes. Missing fields, JSON nulls, wrong
types, a wrong 2xx status or a wrong ``status`` value remain ambiguous.

The low-level :class:`~cycleguard.CyclesClient` methods (``commit_reservation``,
``create_event``) do none of this: direct callers must keep their own durable
record and retry with the same idempotency key.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Self, TypeAlias, final

import anyio
import attrs
from returns.result import Success

from cycleguard._core._errors import CyclesError, UsageError, ValidationFailed, ValidationIssue
from cycleguard._core._journal_format import (
    JournalRecord,
    commit_request,
    event_fallback,
    event_request,
    new_record,
)
from cycleguard._core._models import (
    Action,
    CommitRequest,
    CommitResponse,
    EventCreateRequest,
    EventCreateResponse,
    Subject,
)
from cycleguard._core._retry import (
    MAX_HONOURED_DELAY,
    Backoff,
    Disposition,
    classify,
    not_before_ms,
    remaining_floor,
    retry_after_of,
)
from cycleguard._core._validation import reservation_id_issues, validate
from cycleguard._journal import Journal, JournalConfig

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
    from types import TracebackType

    from anyio.abc import TaskStatus

    from cycleguard._client import CyclesClient

__all__ = (
    "Committed",
    "DrainReport",
    "Pending",
    "RecoveredViaEvent",
    "Rejected",
    "ReplayReport",
    "Settlement",
    "SettlementOutcome",
    "SettlementPolicy",
)

logger = logging.getLogger("cycleguard")

WallClock: TypeAlias = "Callable[[], int]"
"""Returns wall-clock time in epoch milliseconds."""
Sleep: TypeAlias = "Callable[[float], Awaitable[None]]"
"""Waits the given number of seconds."""


def system_time_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


# Outcomes ------------------------------------------------------------------------


@final
@attrs.frozen
class Committed:
    """The commit was applied: a schema-valid HTTP 200. The record is removed.

    (Removed by the time :meth:`Settlement.commit` returns, unless it was called
    with ``wait_for_removal=False``: then in the journal's thread moments later.)
    """

    response: CommitResponse


@final
@attrs.frozen
class RecoveredViaEvent:
    """The reservation had expired; the spend was recorded by ``POST /v1/events`` (201).

    The record is removed.
    """

    response: EventCreateResponse


@final
@attrs.frozen
class Pending:
    """Not settled yet; it will be, by a retry, the sweeper or the next start.

    ``error`` is the last failure. ``journaled`` says whether a durable record
    exists: when ``False`` (journal off or unusable) the spend survives only as
    long as this process does.
    """

    error: CyclesError
    journaled: bool


@final
@attrs.frozen
class Rejected:
    """The server genuinely and understandably refused the settlement; nothing to retry.

    The record is removed. ``error`` says why: a known, non-retryable code (for
    example ``BUDGET_EXCEEDED`` on an event), ``RESERVATION_FINALIZED`` (the
    reservation was already committed or released), ``IDEMPOTENCY_MISMATCH``, or
    :class:`~cycleguard.errors.ValidationFailed` when the request was invalid and
    nothing was journaled or sent. The reservation is not released.
    """

    error: CyclesError


SettlementOutcome: TypeAlias = Committed | RecoveredViaEvent | Pending | Rejected
"""The result of settling one reservation."""


@final
@attrs.frozen(kw_only=True)
class ReplayReport:
    """What one pass over the journal did.

    ``outcomes`` pairs each attempted reservation id with its outcome, in
    journal order; ``deferred`` are records whose ``Retry-After`` floor lies
    beyond this pass; ``quarantined`` are the paths malformed records were
    moved to.
    """

    outcomes: tuple[tuple[str, SettlementOutcome], ...] = ()
    deferred: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()

    def outcome(self, reservation_id: str) -> SettlementOutcome | None:
        """The outcome for one reservation, if this pass attempted it."""
        for rid, outcome in self.outcomes:
            if rid == reservation_id:
                return outcome
        return None


@final
@attrs.frozen(kw_only=True)
class DrainReport:
    """What :meth:`Settlement.drain` left behind.

    ``unresolved`` are the reservation ids still unsettled (journaled ones will
    be replayed by the next start); ``timed_out`` says the bound was reached.
    """

    unresolved: tuple[str, ...]
    timed_out: bool

    @property
    def clean(self) -> bool:
        """Whether every settlement this process knew of was resolved."""
        return not self.unresolved


# Policy --------------------------------------------------------------------------


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{name} must be a finite non-negative number, got {raw!r}")
    return value


@final
@attrs.frozen(kw_only=True)
class SettlementPolicy:
    """How hard settlement tries before leaving a record to the sweeper or the next start.

    Attributes:
        max_retries: Retries after the first attempt in one run (the event
            fallback starts its own count).
        backoff: The wait before each retry (exponential, with jitter).
        retry_budget: Seconds of waiting one run may spend; a longer
            ``Retry-After`` leaves the record to the sweeper instead.
        retry_after_cap: The longest ``Retry-After`` honoured (at most one hour).
        drain_timeout: Default bound of :meth:`Settlement.drain`.
        sweep_min_age: Seconds a record must have been untouched before the
            sweeper takes it over (a younger one may belong to a live process).
        replay_concurrency: Records settled at once by a replay or sweep.

    >>> SettlementPolicy().backoff.total_ceiling(SettlementPolicy().max_retries)
    15.5
    >>> SettlementPolicy.from_env(environ={"CYCLES_RETRY_MAX_ATTEMPTS": "2"}).max_retries
    2
    """

    max_retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    backoff: Backoff = attrs.field(factory=Backoff)
    retry_budget: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))
    retry_after_cap: float = attrs.field(
        default=MAX_HONOURED_DELAY,
        validator=[attrs.validators.ge(0.0), attrs.validators.le(MAX_HONOURED_DELAY)],
    )
    drain_timeout: float = attrs.field(default=10.0, validator=attrs.validators.ge(0.0))
    sweep_min_age: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))
    replay_concurrency: int = attrs.field(default=4, validator=attrs.validators.ge(1))

    @classmethod
    def from_env(
        cls, prefix: str = "CYCLES_", environ: Mapping[str, str] | None = None
    ) -> SettlementPolicy:
        """Read the official SDKs' knobs: ``{prefix}RETRY_MAX_ATTEMPTS``,
        ``RETRY_INITIAL_DELAY``, ``RETRY_MULTIPLIER``, ``RETRY_MAX_DELAY`` and
        ``RETRY_FLUSH_TIMEOUT`` (seconds). Unset ones keep their defaults.

        Raises :class:`~cycleguard.errors.UsageError` for a malformed value.
        """
        env = os.environ if environ is None else environ
        default = cls()

        def number(name: str, fallback: float) -> float:
            raw = env.get(prefix + name, "").strip()
            return _positive_float(prefix + name, raw) if raw else fallback

        retries_raw = env.get(prefix + "RETRY_MAX_ATTEMPTS", "").strip()
        if retries_raw and not retries_raw.isdigit():
            raise UsageError(
                f"{prefix}RETRY_MAX_ATTEMPTS must be a whole number, got {retries_raw!r}"
            )
        try:
            backoff = Backoff(
                initial=number("RETRY_INITIAL_DELAY", default.backoff.initial),
                multiplier=number("RETRY_MULTIPLIER", default.backoff.multiplier),
                max_delay=number("RETRY_MAX_DELAY", default.backoff.max_delay),
                jitter=default.backoff.jitter,
            )
        except ValueError as error:
            raise UsageError(f"invalid {prefix}RETRY_* setting: {error}") from None
        return cls(
            max_retries=int(retries_raw) if retries_raw else default.max_retries,
            backoff=backoff,
            drain_timeout=number("RETRY_FLUSH_TIMEOUT", default.drain_timeout),
        )


# The engine ----------------------------------------------------------------------


@attrs.define
class _Work:
    """One unresolved settlement in this process: the current record and its requests."""

    record: JournalRecord
    commit: CommitRequest | None
    event: EventCreateRequest | None
    journaled: bool
    wait_for_removal: bool = True


def _prefixed(prefix: str, issues: Iterable[ValidationIssue]) -> tuple[ValidationIssue, ...]:
    return tuple(ValidationIssue(f"{prefix}.{issue.field}", issue.message) for issue in issues)


@final
class Settlement:
    """Settles known spend exactly once, through failures, expiry and restarts.

    It uses ``client`` to send and never closes it. With the journal enabled
    (the default, configured from ``CYCLES_JOURNAL_*``), unresolved settlements
    are kept in ``<directory>/<fingerprint>/`` and settled by the next
    :meth:`replay`, by :meth:`run_sweeper`, or by another process of the same
    identity.

    Args:
        client: The client to send with; its ``base_url`` and API key (or
            ``tenant``) select the journal's identity directory.
        journal: Journal settings; ``None`` reads :meth:`JournalConfig.from_env`.
        policy: Retry settings.
        tenant: The principal for the journal's identity (rotation-safe);
            defaults to the client's default subject tenant.
        rng: Source of jitter (inject a seeded one for reproducible tests).
        wall_clock: Epoch milliseconds; ``Retry-After`` floors are absolute wall-clock times.
        sleep: How to wait; defaults to :func:`anyio.sleep` (so trio's mock clock applies).

    Example::

        async with CyclesClient(config) as client, Settlement(client) as settlement:
            await settlement.replay()  # settle what a previous run left behind
            outcome = await settlement.commit(
                reservation_id=reservation.reservation_id,
                request=CommitRequest(idempotency_key=new_idempotency_key(),
                                      actual=Amount.tokens(1_234)),
                subject=subject,
                action=action,
            )
            match outcome:
                case Committed() | RecoveredViaEvent():
                    ...
                case Pending(journaled=True):
                    ...  # durable; will settle later
                case Pending() | Rejected():
                    ...
    """

    def __init__(
        self,
        client: CyclesClient,
        *,
        journal: JournalConfig | None = None,
        policy: SettlementPolicy | None = None,
        tenant: str | None = None,
        rng: random.Random | None = None,
        wall_clock: WallClock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        config = client.config
        journal_config = journal if journal is not None else JournalConfig.from_env()
        self._client = client
        self._policy = policy if policy is not None else SettlementPolicy()
        self._journal: Journal | None = (
            Journal(
                journal_config.base_directory(),
                base_url=config.base_url,
                api_key=config.api_key,
                tenant=tenant if tenant is not None else config.subject.tenant,
            )
            if journal_config.enabled
            else None
        )
        self._rng = rng if rng is not None else random.Random()
        self._now = wall_clock if wall_clock is not None else system_time_ms
        self._sleep = sleep if sleep is not None else anyio.sleep
        self._in_flight: set[str] = set()
        self._idle: anyio.Event | None = None
        self._unresolved: dict[str, _Work] = {}
        self._auth_stopped: set[str] = set()
        self._unsendable: set[str] = set()

    def __repr__(self) -> str:
        where = repr(self._journal) if self._journal is not None else "journal disabled"
        return f"Settlement(base_url={self._client.config.base_url!r}, {where})"

    @property
    def journal(self) -> Journal | None:
        """The journal, or ``None`` when journaling is disabled."""
        return self._journal

    @property
    def policy(self) -> SettlementPolicy:
        """The retry policy."""
        return self._policy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> DrainReport:
        """Drain with the policy's ``drain_timeout`` (see :meth:`drain`)."""
        return await self.drain()

    # Public operations --------------------------------------------------------------

    async def commit(
        self,
        *,
        reservation_id: str,
        request: CommitRequest,
        subject: Subject,
        action: Action,
        wait_for_removal: bool = True,
    ) -> SettlementOutcome:
        """Settle a reservation's known actual spend.

        ``subject`` and ``action`` are the ones the reservation was created
        with: they make the event fallback if the reservation has expired.
        The record is journaled before the first request; retries reuse
        ``request`` unchanged (same idempotency key). Nothing here releases
        the reservation.

        Args:
            reservation_id: The reservation to commit.
            request: The commit body, with its idempotency key.
            subject: The reservation's subject.
            action: The reservation's action.
            wait_for_removal: Whether a ``Committed`` outcome waits until the
                record is removed from disk. ``False`` (what leases and
                ``guarded`` use) leaves the removal to the journal's thread,
                which does it with its next batch (before any later write,
                scan or drain of this process) or within about a second; a
                crash in between only replays the commit with its idempotency
                key, which is never charged twice.

        Returns:
            :class:`Committed`, :class:`RecoveredViaEvent`, :class:`Pending`
            or :class:`Rejected`. An invalid request is
            ``Rejected(ValidationFailed)`` and nothing is journaled or sent.

        Raises:
            UsageError: A settlement for ``reservation_id`` is already running here.

        Example::

            outcome = await settlement.commit(
                reservation_id="rsv_123",
                request=CommitRequest(idempotency_key=key, actual=Amount.tokens(812)),
                subject=Subject(tenant="acme"),
                action=Action("llm.completion", "openai:gpt-4o-mini"),
            )
        """
        issues = (*reservation_id_issues(reservation_id), *validate(request))
        if issues:
            logger.error(
                "Settlement of %s not attempted: invalid request (%s)",
                reservation_id,
                "; ".join(str(issue) for issue in issues),
            )
            return Rejected(ValidationFailed(issues))
        if reservation_id in self._in_flight:
            raise UsageError(f"a settlement of reservation {reservation_id!r} is already running")
        fallback = event_fallback(reservation_id, request, subject, action)
        event_issues = validate(fallback)
        event: EventCreateRequest | None = fallback
        if event_issues:
            # The commit itself is valid and must still be made; only an expiry
            # could not be recovered from this record.
            logger.warning(
                "Settlement of %s has no usable event fallback (%s); if the reservation "
                "has expired its spend cannot be recorded",
                reservation_id,
                "; ".join(str(issue) for issue in _prefixed("event_fallback", event_issues)),
            )
            event = None
        record = new_record(
            reservation_id=reservation_id,
            base_url=self._client.config.base_url,
            commit=request,
            event=event,
            now_ms=self._now(),
        )
        work = _Work(
            record=record,
            commit=request,
            event=event,
            journaled=False,
            wait_for_removal=wait_for_removal,
        )
        # Known from now on: if this call is cancelled, the sweeper and drain still see it.
        self._unresolved[reservation_id] = work
        async with self._tracking(reservation_id):
            # D1: the durable write completes before the request can leave.
            work.journaled = await self._write(work.record)
            outcome = await self._run(work, immediate=True)
        assert outcome is not None  # an immediate run always makes an attempt
        return self._remember(work, outcome)

    async def replay(self) -> ReplayReport:
        """Settle what the journal holds for this identity and server (call at start).

        Records are retried in their stored mode (an event-mode record sends
        only ``POST /v1/events``) with their stored idempotency key, never before
        a persisted ``Retry-After`` floor. Malformed records are quarantined.
        """
        return await self._pass(min_age=0.0, wait_for_floors=True)

    async def sweep(self) -> ReplayReport:
        """One periodic pass: settle due records nobody in this process is working on.

        Records younger than ``policy.sweep_min_age`` that this process did not
        write are left alone (a live process may still be settling them);
        records whose floor is not due yet wait for a later sweep; records
        refused for authentication wait for a restart with new credentials.
        """
        return await self._pass(min_age=self._policy.sweep_min_age, wait_for_floors=False)

    async def run_sweeper(
        self,
        *,
        interval: float,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep every ``interval`` seconds until cancelled; start it in a task group.

        Example::

            async with anyio.create_task_group() as tg:
                await tg.start(partial(settlement.run_sweeper, interval=60.0))
                ...
                tg.cancel_scope.cancel()
        """
        if not interval > 0:
            raise UsageError(f"sweep interval must be positive, got {interval!r}")
        task_status.started()
        while True:
            await self._sleep(interval)
            await self.sweep()

    # ASYNC109: the bounded wait is this method's contract (recovery profile rule D11).
    async def drain(self, timeout: float | None = None) -> DrainReport:  # noqa: ASYNC109
        """Wait, at most ``timeout`` seconds, for settlements to finish; for shutdown.

        Waits for the settlements in flight, then makes one more attempt at
        every due settlement this process knows of (journaled or only in
        memory) and at orphaned records older than ``policy.sweep_min_age``.
        Whatever is not settled when the time is up stays journaled for the
        next start; the report lists every unresolved reservation, including
        records still on disk.

        Args:
            timeout: The bound in seconds; ``None`` uses ``policy.drain_timeout``;
                0 does not wait.

        Example::

            report = await settlement.drain(timeout=5.0)
            if not report.clean:
                log.warning("left for the next start: %s", report.unresolved)
        """
        bound = self._policy.drain_timeout if timeout is None else timeout
        with anyio.move_on_after(bound) as scope:
            await self._wait_idle()
            await self._pass(min_age=self._policy.sweep_min_age, wait_for_floors=False, drain=True)
        open_ids = set(self._unresolved) | self._in_flight
        if self._journal is not None:
            # What is still on disk is unresolved too (whoever wrote it); the scan is
            # shielded and short so a cancelled shutdown still gets its report.
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                loaded = await self._journal.load()
                open_ids.update(record.reservation_id for record in loaded.records)
        unresolved = tuple(sorted(open_ids))
        if unresolved:
            logger.warning(
                "Settlement drain %s with %d unresolved settlement(s)%s: %s",
                "timed out" if scope.cancelled_caught else "finished",
                len(unresolved),
                " (journaled ones settle at the next start)" if self._journal is not None else "",
                ", ".join(unresolved),
            )
        return DrainReport(unresolved=unresolved, timed_out=scope.cancelled_caught)

    # Bookkeeping ----------------------------------------------------------------------

    @asynccontextmanager
    async def _tracking(self, reservation_id: str) -> AsyncGenerator[None]:
        self._in_flight.add(reservation_id)
        try:
            yield
        finally:
            self._in_flight.discard(reservation_id)
            if not self._in_flight and self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _wait_idle(self) -> None:
        while self._in_flight:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _remember(self, work: _Work, outcome: SettlementOutcome) -> SettlementOutcome:
        rid = work.record.reservation_id
        if isinstance(outcome, Pending):
            self._unresolved[rid] = work
        else:
            self._unresolved.pop(rid, None)
            self._auth_stopped.discard(rid)
        return outcome

    async def _write(self, record: JournalRecord) -> bool:
        if self._journal is None:
            return False
        return await self._journal.write(record)

    async def _discard(self, reservation_id: str, *, wait: bool = True) -> None:
        if self._journal is None:
            return
        if wait:
            await self._journal.discard(reservation_id)
        else:
            self._journal.discard_soon(reservation_id)

    # One pass over everything unresolved ----------------------------------------------

    def _work_from(self, record: JournalRecord) -> _Work | Rejected:
        commit = commit_request(record)
        event = event_request(record)
        active = commit if record.mode == "commit" else event
        if not isinstance(active, Success):
            return Rejected(
                ValidationFailed((ValidationIssue(f"{record.mode} body", active.failure()),))
            )
        return _Work(
            record=record,
            commit=commit.value_or(None),
            event=event.value_or(None),
            journaled=True,
        )

    async def _candidates(self, min_age: float) -> tuple[list[_Work], tuple[str, ...]]:
        works: dict[str, _Work] = {}
        quarantined: tuple[str, ...] = ()
        if self._journal is not None:
            loaded = await self._journal.load()
            quarantined = tuple(str(path) for path in loaded.quarantined)
            on_disk = {record.reservation_id for record in loaded.records}
            for rid, known in list(self._unresolved.items()):
                if loaded.complete and known.journaled and rid not in on_disk:
                    # Another worker settled it and removed the record.
                    del self._unresolved[rid]
            now = self._now()
            for record in loaded.records:
                rid = record.reservation_id
                if rid in self._unresolved:
                    continue  # this process's own state is at least as recent
                if now - record.recorded_at_ms < min_age * 1000:
                    continue  # maybe a live process's settlement in progress
                work = self._work_from(record)
                if isinstance(work, Rejected):
                    if rid not in self._unsendable:
                        self._unsendable.add(rid)
                        logger.error(
                            "Journaled settlement %s cannot be sent by this version (%s); "
                            "record left in place",
                            rid,
                            work.error,
                        )
                    continue
                works[rid] = work
        for rid, known in self._unresolved.items():
            works.setdefault(rid, known)
        eligible = [
            work
            for rid, work in works.items()
            if rid not in self._in_flight and rid not in self._auth_stopped
        ]
        return eligible, quarantined

    async def _pass(
        self, *, min_age: float, wait_for_floors: bool, drain: bool = False
    ) -> ReplayReport:
        works, quarantined = await self._candidates(min_age)
        due: list[_Work] = []
        deferred: list[str] = []
        now = self._now()
        for work in works:
            floor = remaining_floor(work.record.not_before_ms, now, self._policy.retry_after_cap)
            limit = self._policy.retry_budget if wait_for_floors else 0.0
            if floor > limit:
                deferred.append(work.record.reservation_id)
                # Known to this process now: later sweeps take it whatever its age.
                self._unresolved.setdefault(work.record.reservation_id, work)
            else:
                due.append(work)
        if due:
            logger.info(
                "Settling %d journaled settlement(s)%s",
                len(due),
                " before shutdown" if drain else "",
            )
        results: dict[str, SettlementOutcome] = {}
        limiter = anyio.CapacityLimiter(self._policy.replay_concurrency)

        async def settle(work: _Work) -> None:
            rid = work.record.reservation_id
            async with limiter:
                if rid in self._in_flight:
                    return
                async with self._tracking(rid):
                    floor = remaining_floor(
                        work.record.not_before_ms, self._now(), self._policy.retry_after_cap
                    )
                    outcome = await self._run(work, immediate=floor == 0.0)
                if outcome is None:
                    deferred.append(rid)
                else:
                    results[rid] = self._remember(work, outcome)

        async with anyio.create_task_group() as group:
            for work in due:
                group.start_soon(settle, work)
        ordered = tuple(
            (work.record.reservation_id, results[work.record.reservation_id])
            for work in due
            if work.record.reservation_id in results
        )
        return ReplayReport(outcomes=ordered, deferred=tuple(deferred), quarantined=quarantined)

    # Attempts -------------------------------------------------------------------------

    async def _pause(self, wait: float, floor_ms: int | None) -> None:
        await self._sleep(wait)
        # A floor is absolute wall-clock time: never send before it, whatever
        # the sleeping clock did. ``floor_ms`` is already bounded by the cap.
        while (left := remaining_floor(floor_ms, self._now())) > 0:
            await self._sleep(left)

    def _bounded_floor(self, not_before: int | None) -> int | None:
        """The floor to honour now: a corrupt or hostile one is at most the cap away."""
        if not_before is None:
            return None
        horizon = self._now() + math.ceil(self._policy.retry_after_cap * 1000)
        return min(not_before, horizon)

    async def _attempt(self, work: _Work) -> CommitResponse | EventCreateResponse | CyclesError:
        rid = work.record.reservation_id
        if work.record.mode == "commit":
            assert work.commit is not None
            committed = await self._client.send(work.commit, reservation_id=rid)
            return committed.unwrap() if isinstance(committed, Success) else committed.failure()
        assert work.event is not None
        recorded = await self._client.send(work.event)
        return recorded.unwrap() if isinstance(recorded, Success) else recorded.failure()

    async def _rewrite(self, work: _Work, record: JournalRecord) -> None:
        work.record = record
        work.journaled = await self._write(record)

    async def _run(self, work: _Work, *, immediate: bool) -> SettlementOutcome | None:
        """Attempt, classify, wait and retry until settled, stopped or out of budget.

        Returns ``None`` only when the budget ran out before any attempt.
        """
        rid = work.record.reservation_id
        policy = self._policy
        budget = policy.retry_budget
        retries = 0
        last_error: CyclesError | None = None
        while True:
            if not immediate:
                if retries >= policy.max_retries:
                    break
                floor_ms = self._bounded_floor(work.record.not_before_ms)
                floor = remaining_floor(floor_ms, self._now())
                wait = max(policy.backoff.delay(retries, self._rng), floor)
                if wait > budget:
                    break
                await self._pause(wait, floor_ms)
                budget -= wait
                retries += 1
            immediate = False
            mode = work.record.mode
            answer = await self._attempt(work)
            match answer:
                case CommitResponse():
                    await self._discard(rid, wait=work.wait_for_removal)
                    logger.info("Committed %s (attempt %d)", rid, retries + 1)
                    return Committed(answer)
                case EventCreateResponse():
                    await self._discard(rid)
                    logger.warning(
                        "Recovered the spend of expired reservation %s via POST /v1/events "
                        "(event %s)",
                        rid,
                        answer.event_id,
                    )
                    return RecoveredViaEvent(answer)
                case _:
                    error: CyclesError = answer
            last_error = error
            disposition = classify(error, mode)
            match disposition:
                case Disposition.RETRY:
                    logger.warning(
                        "Settlement %s of %s is ambiguous or failed (%s); retrying with the "
                        "same idempotency key",
                        mode,
                        rid,
                        error,
                    )
                case Disposition.RATE_LIMITED:
                    delay = retry_after_of(error, policy.retry_after_cap)
                    if delay is not None:
                        # D7: persist the absolute floor, so a restart cannot retry earlier.
                        now = self._now()
                        floor_ms = not_before_ms(now, delay, policy.retry_after_cap)
                        await self._rewrite(
                            work,
                            attrs.evolve(work.record, recorded_at_ms=now, not_before_ms=floor_ms),
                        )
                    logger.warning(
                        "Settlement %s of %s was rate limited (Retry-After %s s); retrying "
                        "with the same idempotency key",
                        mode,
                        rid,
                        delay,
                    )
                case Disposition.AUTH_STOP:
                    self._auth_stopped.add(rid)
                    logger.error(
                        "Settlement %s of %s was refused for authentication (%s); the record "
                        "is kept: fix the credentials and restart to settle it. The reservation "
                        "is not released.",
                        mode,
                        rid,
                        error,
                    )
                    return Pending(error, work.journaled)
                case Disposition.STOP:
                    logger.error(
                        "Settlement %s of %s got an answer this version cannot classify (%s); "
                        "the record is kept for a later attempt",
                        mode,
                        rid,
                        error,
                    )
                    return Pending(error, work.journaled)
                case Disposition.EXPIRED:
                    if work.event is None:
                        logger.error(
                            "Reservation %s expired and the record has no event fallback; the "
                            "spend is unrecorded (record kept)",
                            rid,
                        )
                        return Pending(error, work.journaled)
                    # D8: the durable record switches to event mode before the event is sent.
                    await self._rewrite(
                        work,
                        attrs.evolve(
                            work.record,
                            mode="event",
                            not_before_ms=None,
                            recorded_at_ms=self._now(),
                        ),
                    )
                    logger.warning(
                        "Reservation %s expired before its commit landed; settling through "
                        "POST /v1/events with the same idempotency key",
                        rid,
                    )
                    immediate = True
                    retries = 0
                case Disposition.FINALIZED:
                    await self._discard(rid)
                    logger.warning(
                        "Reservation %s was already finalized; nothing more to settle (%s)",
                        rid,
                        error,
                    )
                    return Rejected(error)
                case Disposition.REJECTED:
                    await self._discard(rid)
                    logger.error(
                        "Settlement %s of %s was rejected (%s)%s; the record is removed",
                        mode,
                        rid,
                        error,
                        "; spend recovery failed" if mode == "event" else "",
                    )
                    return Rejected(error)
        if last_error is None:
            return None
        logger.error(
            "Settlement of %s still unresolved after %d retries (%s)%s",
            rid,
            retries,
            last_error,
            "; the record is kept for the sweeper and the next start"
            if work.journaled
            else "; NOT journaled: it survives only while this process runs",
        )
        return Pending(last_error, work.journaled)
