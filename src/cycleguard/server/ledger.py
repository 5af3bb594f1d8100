"""The budget authority's rules as pure functions: state + request + now -> new state + outcome.

Nothing here performs I/O or reads a clock; callers pass ``now`` and the
records involved, and store what comes back. Every function keeps the ledger
identity ``allocated == remaining + spent + reserved + debt`` on each budget.

Reservation state changes go through the shared transition table in
:mod:`cycleguard._core._state` (``can_transition`` / ``next_state``).

Check order for a new hold (reserve, dry run, decide) is check-major across
the budgeted scopes, root first: any FROZEN scope, then any CLOSED scope, then
any over-limit scope, then any scope with debt and no overdraft allowance,
then any scope whose remaining does not cover the amount. This makes
``OVERDRAFT_LIMIT_EXCEEDED`` win over ``DEBT_OUTSTANDING`` wherever they occur.
"""

from __future__ import annotations

import enum
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, final

import attrs

from cycleguard._core._errors import ErrorCode
from cycleguard._core._json import MAX_INT64, JsonObject
from cycleguard._core._models import (
    Action,
    Amount,
    Balance,
    OveragePolicy,
    SignedAmount,
    StandardMetrics,
    Subject,
    Unit,
)
from cycleguard._core._scopes import leaf_segment
from cycleguard._core._state import LeaseEvent, LeaseState, can_transition, next_state
from cycleguard.server.records import (
    Budget,
    BudgetStatus,
    Rejection,
    ReservationRecord,
    budget_key,
    rejection,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = (
    "Expired",
    "FundingOperation",
    "Lapsed",
    "Released",
    "Settled",
    "Settlement",
    "check_hold",
    "check_open",
    "commit",
    "effective_state",
    "expire",
    "extend",
    "fund",
    "locate",
    "new_reservation",
    "release",
    "reserve_on",
    "settle",
    "to_balance",
    "with_over_limit_recomputed",
    "balance_json",
)

MIN_INT64 = -(2**63)


# Locating budgets -----------------------------------------------------------


def locate(
    scopes: Sequence[str], unit: Unit, budgets: Mapping[str, Budget]
) -> tuple[Budget, ...] | Rejection:
    """The budgets for ``unit`` at ``scopes`` (canonical order), or why there are none.

    ``budgets`` maps store keys (:func:`budget_key`) to the budgets known at
    these scopes: every one in ``unit``, and when there is none, every one in
    any unit. No budget in ``unit`` but one in another unit is
    ``UNIT_MISMATCH`` (with ``scope``, ``requested_unit``, ``expected_units``);
    no budget at all is ``NOT_FOUND``.
    """
    found = tuple(
        budget for scope in scopes if (budget := budgets.get(budget_key(scope, unit))) is not None
    )
    if found:
        return found
    for scope in scopes:
        others = [other.value for other in Unit if budget_key(scope, other) in budgets]
        if others:
            return rejection(
                ErrorCode.UNIT_MISMATCH,
                f"Budget at scope '{scope}' exists but in a different unit "
                f"(requested: {unit.value}, expected: {others})",
                {"scope": scope, "requested_unit": unit.value, "expected_units": others},
            )
    deepest = scopes[-1] if scopes else ""
    return rejection(ErrorCode.NOT_FOUND, f"Budget not found for provided scope: {deepest}")


# Holding budget -------------------------------------------------------------


def check_open(budgets: Sequence[Budget]) -> Rejection | None:
    """``BUDGET_FROZEN`` if any budget is frozen, else ``BUDGET_CLOSED`` if any is closed."""
    for budget in budgets:
        if budget.status is BudgetStatus.FROZEN:
            return rejection(ErrorCode.BUDGET_FROZEN, f"Budget is frozen for scope: {budget.scope}")
    for budget in budgets:
        if budget.status is BudgetStatus.CLOSED:
            return rejection(ErrorCode.BUDGET_CLOSED, f"Budget is closed for scope: {budget.scope}")
    return None


def check_hold(budgets: Sequence[Budget], amount: int) -> Rejection | None:
    """Why a new hold of ``amount`` on ``budgets`` must be refused, or ``None``.

    Check-major order (see the module docstring).
    """
    closed = check_open(budgets)
    if closed is not None:
        return closed
    for budget in budgets:
        if budget.is_over_limit:
            return rejection(
                ErrorCode.OVERDRAFT_LIMIT_EXCEEDED,
                f"Scope {budget.scope} is over its overdraft limit "
                f"(debt {budget.debt}, limit {budget.overdraft_limit})",
            )
    for budget in budgets:
        if budget.debt > 0 and budget.overdraft_limit == 0:
            return rejection(
                ErrorCode.DEBT_OUTSTANDING,
                f"Outstanding debt {budget.debt} blocks new reservations for scope: {budget.scope}",
            )
    for budget in budgets:
        if budget.remaining < amount:
            return rejection(
                ErrorCode.BUDGET_EXCEEDED,
                f"Budget exceeded for scope {budget.scope}: remaining {budget.remaining}, "
                f"requested {amount}",
            )
    return None


def reserve_on(budgets: Iterable[Budget], amount: int, now_ms: int) -> tuple[Budget, ...]:
    """Move ``amount`` from ``remaining`` to ``reserved`` on every budget."""
    return tuple(
        budget.with_balances(
            remaining=budget.remaining - amount,
            reserved=budget.reserved + amount,
            spent=budget.spent,
            debt=budget.debt,
            updated_at_ms=now_ms,
        )
        for budget in budgets
    )


def _unhold(budgets: Iterable[Budget], amount: int, now_ms: int) -> tuple[Budget, ...]:
    return tuple(
        budget.with_balances(
            remaining=budget.remaining + amount,
            reserved=budget.reserved - amount,
            spent=budget.spent,
            debt=budget.debt,
            updated_at_ms=now_ms,
        )
        for budget in budgets
    )


# Settling spend -------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class Settlement:
    """Budgets after a charge; ``charged`` may be below the actual under a cap."""

    budgets: tuple[Budget, ...]
    charged: int
    debt_incurred: int


def _fits(budget: Budget) -> bool:
    values = (budget.allocated, budget.remaining, budget.reserved, budget.spent, budget.debt)
    return min(values) >= MIN_INT64 and max(values) <= MAX_INT64


def _overflow(budgets: Iterable[Budget]) -> Rejection | None:
    for budget in budgets:
        if not _fits(budget):
            return rejection(
                ErrorCode.INVALID_REQUEST,
                f"the amount would take the ledger of scope {budget.scope} beyond int64",
            )
    return None


def settle(
    budgets: Sequence[Budget],
    *,
    held: int,
    actual: int,
    policy: OveragePolicy,
    now_ms: int,
) -> Settlement | Rejection:
    """Charge ``actual`` against ``budgets`` that each hold ``held`` for this charge.

    A commit settles with ``held`` = the reservation's estimate; an event with
    ``held`` = 0. The caller applies ``REJECT`` (whose trigger differs between
    commits and events) before calling; here ``REJECT`` behaves as
    ``ALLOW_IF_AVAILABLE``, which never caps when remaining covers the overage.

    - overage ``delta = actual - held <= 0``: charge ``actual``, return the rest;
    - ``ALLOW_IF_AVAILABLE``: cap the overage at the smallest non-negative
      remaining; scopes that could not cover it become over limit; never debt;
    - ``ALLOW_WITH_OVERDRAFT``: scopes without an overdraft limit cap as above;
      on the others the part remaining cannot cover becomes debt, refused with
      ``OVERDRAFT_LIMIT_EXCEEDED`` if that debt would pass the limit.
    """
    delta = actual - held
    if delta <= 0:
        exact = tuple(_charge(budget, held, actual, 0, now_ms) for budget in budgets)
        return _overflow(exact) or Settlement(budgets=exact, charged=actual, debt_incurred=0)
    if policy is OveragePolicy.ALLOW_WITH_OVERDRAFT:
        capping = [budget for budget in budgets if budget.overdraft_limit == 0]
    else:
        capping = list(budgets)
    capped = min([delta, *(max(budget.remaining, 0) for budget in capping)])
    capping_scopes = {budget.scope for budget in capping}
    deficits: dict[str, int] = {}
    if policy is OveragePolicy.ALLOW_WITH_OVERDRAFT:
        for budget in budgets:
            if budget.overdraft_limit == 0:
                continue
            deficit = max(0, capped - max(budget.remaining, 0))
            if budget.debt + deficit > budget.overdraft_limit:
                return rejection(
                    ErrorCode.OVERDRAFT_LIMIT_EXCEEDED,
                    f"Overdraft limit exceeded for scope {budget.scope}: debt {budget.debt} + "
                    f"{deficit} > limit {budget.overdraft_limit}",
                )
            deficits[budget.scope] = deficit
    settled: list[Budget] = []
    for budget in budgets:
        deficit = deficits.get(budget.scope, 0)
        charged = _charge(budget, held, held + capped, deficit, now_ms)
        uncovered = capped < delta and budget.remaining < delta and budget.scope in capping_scopes
        if uncovered or charged.debt > charged.overdraft_limit:
            charged = attrs.evolve(charged, is_over_limit=True)
        settled.append(charged)
    result = tuple(settled)
    return _overflow(result) or Settlement(
        budgets=result, charged=held + capped, debt_incurred=max(deficits.values(), default=0)
    )


def _charge(budget: Budget, held: int, charge: int, deficit: int, now_ms: int) -> Budget:
    # reserved gives up the hold, the charge leaves remaining, and of the charge
    # the unfunded part is debt and the rest is spent: the identity holds.
    return budget.with_balances(
        reserved=budget.reserved - held,
        remaining=budget.remaining + held - charge,
        spent=budget.spent + charge - deficit,
        debt=budget.debt + deficit,
        updated_at_ms=now_ms,
    )


# Reservations ---------------------------------------------------------------


def new_reservation(
    *,
    reservation_id: str,
    tenant_id: str,
    subject: Subject,
    action: Action,
    estimate: Amount,
    scopes: tuple[str, ...],
    budgets: Sequence[Budget],
    ttl_ms: int,
    grace_period_ms: int,
    overage_policy: OveragePolicy,
    max_extensions: int,
    max_ttl_ms: int,
    idempotency_key: str,
    metadata: JsonObject | None,
    now_ms: int,
) -> ReservationRecord:
    """A fresh ACTIVE reservation holding ``estimate`` on ``budgets``."""
    return ReservationRecord(
        reservation_id=reservation_id,
        tenant_id=tenant_id,
        state=LeaseState.ACTIVE,
        subject=subject,
        action=action,
        estimate=estimate,
        scope_path=scopes[-1],
        affected_scopes=scopes,
        budgeted_scopes=tuple(budget.scope for budget in budgets),
        created_at_ms=now_ms,
        expires_at_ms=now_ms + ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=overage_policy,
        max_extensions=max_extensions,
        max_ttl_ms=max_ttl_ms,
        idempotency_key=idempotency_key,
        metadata=metadata,
    )


def effective_state(reservation: ReservationRecord, now_ms: int) -> LeaseState:
    """The state a reader sees: an ACTIVE hold past ``expires_at + grace`` is EXPIRED."""
    if reservation.state is LeaseState.ACTIVE and _lapsed(reservation, now_ms):
        return LeaseState.EXPIRED
    return reservation.state


def _lapsed(reservation: ReservationRecord, now_ms: int) -> bool:
    return now_ms > reservation.expires_at_ms + reservation.grace_period_ms


@final
@attrs.frozen(kw_only=True)
class Expired:
    """A reservation that expired and the budgets its hold went back to."""

    reservation: ReservationRecord
    budgets: tuple[Budget, ...]


def expire(
    reservation: ReservationRecord, budgets: Sequence[Budget], now_ms: int
) -> Expired | None:
    """Expire an ACTIVE reservation past its grace period, returning its hold; else ``None``."""
    if not can_transition(reservation.state, LeaseEvent.EXPIRE) or not _lapsed(reservation, now_ms):
        return None
    return Expired(
        reservation=attrs.evolve(
            reservation, state=next_state(reservation.state, LeaseEvent.EXPIRE)
        ),
        budgets=_unhold(budgets, reservation.estimate.amount, now_ms),
    )


@final
@attrs.frozen(kw_only=True)
class Lapsed:
    """A settlement refused because the reservation had expired; the expiry is to be stored."""

    expired: Expired
    rejection: Rejection


def _expired_rejection() -> Rejection:
    return rejection(ErrorCode.RESERVATION_EXPIRED, "Reservation has expired")


def _settleable(
    reservation: ReservationRecord, event: LeaseEvent, budgets: Sequence[Budget], now_ms: int
) -> Rejection | Lapsed | None:
    if reservation.state is LeaseState.EXPIRED:
        return _expired_rejection()
    if not can_transition(reservation.state, event):
        return rejection(
            ErrorCode.RESERVATION_FINALIZED,
            f"Reservation is already {reservation.state.value}",
        )
    expired = expire(reservation, budgets, now_ms)
    if expired is not None:
        return Lapsed(expired=expired, rejection=_expired_rejection())
    return None


@final
@attrs.frozen(kw_only=True)
class Settled:
    """A commit's outcome: the budgets, the charge and what went back to remaining.

    :meth:`reservation` builds the COMMITTED record. It takes the answer a replay
    of the commit sends, so the record (the largest value a request changes) is
    copied once, not once here and again to add the answer.
    """

    committed: ReservationRecord
    """The ACTIVE record that was committed."""
    budgets: tuple[Budget, ...]
    charged: Amount
    released: Amount | None
    debt_incurred: int
    metrics: StandardMetrics | None
    metadata: JsonObject | None
    now_ms: int

    def reservation(
        self,
        *,
        commit_key: str | None = None,
        commit_hash: str | None = None,
        commit_response: JsonObject | None = None,
    ) -> ReservationRecord:
        """The COMMITTED record, holding the commit's idempotency key, payload hash and answer."""
        return attrs.evolve(
            self.committed,
            state=next_state(self.committed.state, LeaseEvent.COMMIT),
            finalized_at_ms=self.now_ms,
            charged=self.charged,
            debt_incurred=self.debt_incurred,
            metrics=self.metrics,
            committed_metadata=self.metadata,
            commit_key=commit_key,
            commit_hash=commit_hash,
            commit_response=commit_response,
        )


def commit(
    reservation: ReservationRecord,
    budgets: Sequence[Budget],
    *,
    actual: Amount,
    metrics: StandardMetrics | None,
    metadata: JsonObject | None,
    now_ms: int,
) -> Settled | Lapsed | Rejection:
    """Commit ``actual`` against an ACTIVE reservation under its overage policy.

    ``REJECT`` refuses any actual above the estimate (``BUDGET_EXCEEDED``),
    leaving the reservation ACTIVE. Past ``expires_at + grace`` the reservation
    expires instead (``Lapsed``).
    """
    refusal = _settleable(reservation, LeaseEvent.COMMIT, budgets, now_ms)
    if refusal is not None:
        return refusal
    estimate = reservation.estimate
    if actual.unit is not estimate.unit:
        return rejection(
            ErrorCode.UNIT_MISMATCH,
            f"actual.unit {actual.unit.value} differs from the reservation's unit "
            f"{estimate.unit.value}",
        )
    if reservation.overage_policy is OveragePolicy.REJECT and actual.amount > estimate.amount:
        return rejection(
            ErrorCode.BUDGET_EXCEEDED,
            f"actual {actual.amount} exceeds the reserved {estimate.amount} and the overage "
            "policy is REJECT",
        )
    settlement = settle(
        budgets,
        held=estimate.amount,
        actual=actual.amount,
        policy=reservation.overage_policy,
        now_ms=now_ms,
    )
    if isinstance(settlement, Rejection):
        return settlement
    charged = Amount(estimate.unit, settlement.charged)
    released = estimate.amount - settlement.charged
    return Settled(
        committed=reservation,
        budgets=settlement.budgets,
        charged=charged,
        released=Amount(estimate.unit, released) if released > 0 else None,
        debt_incurred=settlement.debt_incurred,
        metrics=metrics,
        metadata=metadata,
        now_ms=now_ms,
    )


@final
@attrs.frozen(kw_only=True)
class Released:
    """A release's outcome: the budgets the hold went back to.

    :meth:`reservation` builds the RELEASED record (with the answer, as
    :meth:`Settled.reservation` does).
    """

    released: ReservationRecord
    """The ACTIVE record that was released."""
    budgets: tuple[Budget, ...]
    reason: str | None
    now_ms: int

    def reservation(
        self,
        *,
        release_key: str | None = None,
        release_hash: str | None = None,
        release_response: JsonObject | None = None,
    ) -> ReservationRecord:
        """The RELEASED record, holding the release's idempotency key, payload hash and answer."""
        return attrs.evolve(
            self.released,
            state=next_state(self.released.state, LeaseEvent.RELEASE),
            finalized_at_ms=self.now_ms,
            release_reason=self.reason,
            release_key=release_key,
            release_hash=release_hash,
            release_response=release_response,
        )


def release(
    reservation: ReservationRecord,
    budgets: Sequence[Budget],
    *,
    reason: str | None,
    now_ms: int,
) -> Released | Lapsed | Rejection:
    """Release an ACTIVE reservation, returning its whole hold to remaining."""
    refusal = _settleable(reservation, LeaseEvent.RELEASE, budgets, now_ms)
    if refusal is not None:
        return refusal
    return Released(
        released=reservation,
        budgets=_unhold(budgets, reservation.estimate.amount, now_ms),
        reason=reason,
        now_ms=now_ms,
    )


def extend(
    reservation: ReservationRecord, *, extend_by_ms: int, now_ms: int
) -> ReservationRecord | Rejection:
    """Move ``expires_at`` out by ``extend_by_ms`` from its current value.

    Only while ACTIVE and ``now <= expires_at`` (no grace for extend), and
    fewer than ``max_extensions`` times. The new expiry is clamped so the lead
    over ``now`` never exceeds the reservation's maximum TTL.
    """
    if reservation.state is LeaseState.EXPIRED:
        return _expired_rejection()
    if not can_transition(reservation.state, LeaseEvent.EXTEND):
        return rejection(
            ErrorCode.RESERVATION_FINALIZED,
            f"Reservation is already {reservation.state.value}",
        )
    if now_ms > reservation.expires_at_ms:
        return _expired_rejection()
    if reservation.extension_count >= reservation.max_extensions:
        return rejection(
            ErrorCode.MAX_EXTENSIONS_EXCEEDED,
            f"Maximum reservation extensions ({reservation.max_extensions}) reached",
        )
    wanted = reservation.expires_at_ms + extend_by_ms
    expires_at = max(reservation.expires_at_ms, min(wanted, now_ms + reservation.max_ttl_ms))
    return attrs.evolve(
        reservation,
        state=next_state(reservation.state, LeaseEvent.EXTEND),
        expires_at_ms=expires_at,
        extension_count=reservation.extension_count + 1,
    )


# Funding (admin plane) ------------------------------------------------------


class FundingOperation(enum.Enum):
    """Admin adjustments of a budget outside the reservation flow."""

    CREDIT = "CREDIT"
    DEBIT = "DEBIT"
    RESET = "RESET"
    REPAY_DEBT = "REPAY_DEBT"
    RESET_SPENT = "RESET_SPENT"


def with_over_limit_recomputed(budget: Budget) -> Budget:
    """``is_over_limit`` recomputed as ``debt > overdraft_limit``."""
    return attrs.evolve(budget, is_over_limit=budget.debt > budget.overdraft_limit)


def fund(
    budget: Budget,
    operation: FundingOperation,
    amount: int,
    *,
    spent: int | None,
    now_ms: int,
) -> Budget | Rejection:
    """Apply a funding operation; ``is_over_limit`` is then recomputed.

    - ``CREDIT``: allocated and remaining grow by ``amount``;
    - ``DEBIT``: both shrink, refused if remaining would go below zero;
    - ``RESET``: allocated becomes ``amount``; spent, reserved and debt stay;
    - ``RESET_SPENT``: as ``RESET`` and spent becomes ``spent`` (default 0);
    - ``REPAY_DEBT``: ``amount`` of new money pays debt first (that
      consumption turns into spent); the rest tops up remaining.
    """
    if budget.status is BudgetStatus.FROZEN:
        return rejection(ErrorCode.BUDGET_FROZEN, f"Budget is frozen for scope: {budget.scope}")
    if budget.status is BudgetStatus.CLOSED:
        return rejection(ErrorCode.BUDGET_CLOSED, f"Budget is closed for scope: {budget.scope}")
    allocated, new_spent, debt = budget.allocated, budget.spent, budget.debt
    match operation:
        case FundingOperation.CREDIT:
            allocated += amount
        case FundingOperation.DEBIT:
            if budget.remaining < amount:
                return rejection(
                    ErrorCode.BUDGET_EXCEEDED,
                    f"cannot debit {amount}: remaining is {budget.remaining} at scope "
                    f"{budget.scope}",
                )
            allocated -= amount
        case FundingOperation.RESET:
            allocated = amount
        case FundingOperation.RESET_SPENT:
            allocated = amount
            new_spent = 0 if spent is None else spent
        case FundingOperation.REPAY_DEBT:
            repaid = min(debt, amount)
            debt -= repaid
            new_spent += repaid
            allocated += amount
    funded = with_over_limit_recomputed(
        attrs.evolve(
            budget,
            allocated=allocated,
            remaining=allocated - new_spent - budget.reserved - debt,
            spent=new_spent,
            debt=debt,
            updated_at_ms=now_ms,
        )
    )
    if allocated > MAX_INT64 or allocated < 0:
        return rejection(
            ErrorCode.INVALID_REQUEST,
            f"allocated would be {allocated}, outside 0..{MAX_INT64}",
        )
    return _overflow((funded,)) or funded


# Views ----------------------------------------------------------------------


def balance_json(budget: Budget) -> str:
    """:func:`to_balance` already encoded: the compact JSON of ``to_wire(to_balance(budget))``.

    Balances are in every settlement answer, so they skip the model round trip
    and the JSON encoder's walk over eight small objects (most of the cost of
    encoding an answer).
    """
    unit = budget.unit.value
    over_limit = ',"is_over_limit":true' if budget.is_over_limit else ""
    return (
        f'{{"scope":{encode_basestring(leaf_segment(budget.scope))},'
        f'"scope_path":{encode_basestring(budget.scope)},'
        f'"remaining":{{"unit":"{unit}","amount":{budget.remaining}}},'
        f'"reserved":{{"unit":"{unit}","amount":{budget.reserved}}},'
        f'"spent":{{"unit":"{unit}","amount":{budget.spent}}},'
        f'"debt":{{"unit":"{unit}","amount":{budget.debt}}},'
        f'"allocated":{{"unit":"{unit}","amount":{budget.allocated}}},'
        f'"overdraft_limit":{{"unit":"{unit}","amount":{budget.overdraft_limit}}}{over_limit}}}'
    )


def to_balance(budget: Budget) -> Balance:
    """The wire ``Balance`` of a budget: leaf ``scope``, full ``scope_path``, every amount."""
    unit = budget.unit
    return Balance(
        scope=leaf_segment(budget.scope),
        scope_path=budget.scope,
        remaining=SignedAmount(unit, budget.remaining),
        reserved=Amount(unit, budget.reserved),
        spent=Amount(unit, budget.spent),
        debt=Amount(unit, budget.debt),
        allocated=Amount(unit, budget.allocated),
        overdraft_limit=Amount(unit, budget.overdraft_limit),
        is_over_limit=budget.is_over_limit,
    )
