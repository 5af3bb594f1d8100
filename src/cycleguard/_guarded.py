"""``guarded``: reserve, run the caller's function, commit what it reports.

The seed's ``with_cycles`` turns the caller's error into a string; here the
caller's failure stays its own typed value next to the Cycles failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, final

import attrs
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from cycleguard._core._errors import CyclesError, UsageError
from cycleguard._core._json import JsonObject
from cycleguard._core._models import Action, Amount, OveragePolicy, StandardMetrics, Subject
from cycleguard._lease import AlreadyFinalized, Lease, open_reservation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cycleguard._client import CyclesClient
    from cycleguard._heartbeat import HeartbeatCallback
    from cycleguard._settlement import Settlement

T = TypeVar("T")
E = TypeVar("E")


@final
@attrs.frozen(kw_only=True)
class Spent(Generic[T]):
    """What a guarded function returns on success: its value and what it used.

    >>> Spent(value="hello", actual=Amount.tokens(42)).actual.amount
    42
    """

    value: T
    actual: Amount
    metrics: StandardMetrics | None = None
    metadata: JsonObject | None = None


async def guarded(
    client: CyclesClient,
    call: Callable[[Lease], Awaitable[Result[Spent[T], E]]],
    *,
    action: Action,
    estimate: Amount,
    subject: Subject | None = None,
    ttl_ms: int | None = None,
    grace_period_ms: int | None = None,
    overage_policy: OveragePolicy | None = None,
    metadata: JsonObject | None = None,
    settlement: Settlement | None = None,
    heartbeat: bool = True,
    on_heartbeat: HeartbeatCallback | None = None,
) -> Result[T, E | CyclesError]:
    """Reserve ``estimate``, run ``call(lease)``, and commit the amount it reports.

    - A denial (budget exceeded, DENY, ...) is returned before ``call`` runs.
    - ``call`` gets the live :class:`Lease` so it can apply its caps.
    - ``call``'s own failure value is returned unchanged after the reservation is
      released (with a reason naming the failure's type).
    - On success the actual amount is committed through durable settlement; a
      commit the server refuses for good is returned as that Cycles error.

    ``call`` must not commit or release the lease itself: ``guarded`` owns that,
    and raises :class:`~cycleguard.errors.UsageError` if it finds the lease
    already finalized. An exception ``call`` raises releases the reservation and
    propagates.

    Example::

        async def summarize(lease: Lease) -> Result[Spent[str], openai.OpenAIError]:
            ...

        result = await guarded(cycles, summarize,
                               action=Action("llm.completion", "openai:gpt-4o-mini"),
                               estimate=Amount.tokens(1_500))
    """
    async with open_reservation(
        client,
        action=action,
        estimate=estimate,
        subject=subject,
        ttl_ms=ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=overage_policy,
        metadata=metadata,
        settlement=settlement,
        heartbeat=heartbeat,
        on_heartbeat=on_heartbeat,
    ) as reserved:
        if not is_successful(reserved):
            return Failure(reserved.failure())
        lease = reserved.unwrap()
        outcome = await call(lease)
        if not is_successful(outcome):
            failure = outcome.failure()
            await lease.release(f"guarded call failed: {type(failure).__name__}")
            return Failure(failure)
        spent = outcome.unwrap()
        committed = await lease.commit(spent.actual, metrics=spent.metrics, metadata=spent.metadata)
        if is_successful(committed):
            return Success(spent.value)
        refused = committed.failure()
        if isinstance(refused, AlreadyFinalized):
            raise UsageError(
                "the guarded function finalized its lease itself; guarded() commits or releases it"
            )
        return Failure(refused.error)
