"""The pure budget rules, without a store or an event loop."""

from __future__ import annotations

import attrs
import pytest

from cycleguard._core._errors import ErrorCode
from cycleguard._core._models import Action, Amount, OveragePolicy, Subject, Unit
from cycleguard._core._state import LeaseState
from cycleguard.server import ledger
from cycleguard.server.ledger import FundingOperation
from cycleguard.server.records import (
    Budget,
    BudgetStatus,
    Rejection,
    ReservationRecord,
    RolloverPolicy,
)

NOW = 1_000_000


def budget(
    scope: str = "tenant:t",
    allocated: int = 1_000,
    *,
    remaining: int | None = None,
    reserved: int = 0,
    spent: int = 0,
    debt: int = 0,
    overdraft_limit: int = 0,
    is_over_limit: bool = False,
    status: BudgetStatus = BudgetStatus.ACTIVE,
) -> Budget:
    return Budget(
        scope=scope,
        unit=Unit.TOKENS,
        tenant_id="t",
        ledger_id=f"l-{scope}",
        allocated=allocated,
        remaining=allocated if remaining is None else remaining,
        reserved=reserved,
        spent=spent,
        debt=debt,
        overdraft_limit=overdraft_limit,
        is_over_limit=is_over_limit,
        status=status,
        created_at_ms=0,
    )


def identity_holds(b: Budget) -> bool:
    return b.allocated == b.remaining + b.spent + b.reserved + b.debt


def reservation(
    budgets: tuple[Budget, ...], amount: int, policy: OveragePolicy = OveragePolicy.REJECT
) -> tuple[ReservationRecord, tuple[Budget, ...]]:
    held = ledger.reserve_on(budgets, amount, NOW)
    record = ledger.new_reservation(
        reservation_id="r1",
        tenant_id="t",
        subject=Subject(tenant="t"),
        action=Action("llm.completion", "m"),
        estimate=Amount.tokens(amount),
        scopes=tuple(b.scope for b in budgets),
        budgets=held,
        ttl_ms=10_000,
        grace_period_ms=1_000,
        overage_policy=policy,
        max_extensions=2,
        max_ttl_ms=60_000,
        idempotency_key="k",
        metadata=None,
        now_ms=NOW,
    )
    return record, held


def code(outcome: object) -> str:
    assert isinstance(outcome, Rejection), outcome
    return outcome.error


class TestLocate:
    def test_finds_budgets_in_canonical_order_skipping_gaps(self) -> None:
        root, leaf = budget("tenant:t"), budget("tenant:t/app:a/agent:x")
        found = ledger.locate(
            ("tenant:t", "tenant:t/app:a", "tenant:t/app:a/agent:x"),
            Unit.TOKENS,
            {root.store_key: root, leaf.store_key: leaf},
        )
        assert found == (root, leaf)

    def test_unit_mismatch_names_scope_and_units(self) -> None:
        other = attrs.evolve(budget("tenant:t"), unit=Unit.USD_MICROCENTS)
        found = ledger.locate(("tenant:t",), Unit.TOKENS, {other.store_key: other})
        assert isinstance(found, Rejection)
        assert (found.status, found.error) == (400, "UNIT_MISMATCH")
        assert found.details == {
            "scope": "tenant:t",
            "requested_unit": "TOKENS",
            "expected_units": ["USD_MICROCENTS"],
        }

    def test_no_budget_at_all_is_not_found_naming_the_deepest_scope(self) -> None:
        found = ledger.locate(("tenant:t", "tenant:t/agent:x"), Unit.TOKENS, {})
        assert isinstance(found, Rejection)
        assert (found.status, found.error) == (404, "NOT_FOUND")
        assert found.message == "Budget not found for provided scope: tenant:t/agent:x"


class TestCheckOrder:
    def test_frozen_anywhere_beats_insufficient_elsewhere(self) -> None:
        budgets = (budget(remaining=0), budget("tenant:t/agent:a", status=BudgetStatus.FROZEN))
        assert code(ledger.check_hold(budgets, 5)) == "BUDGET_FROZEN"

    def test_frozen_beats_closed(self) -> None:
        budgets = (budget(status=BudgetStatus.CLOSED), budget("x:y", status=BudgetStatus.FROZEN))
        assert code(ledger.check_hold(budgets, 5)) == "BUDGET_FROZEN"

    def test_closed_beats_over_limit(self) -> None:
        budgets = (budget(is_over_limit=True), budget("x:y", status=BudgetStatus.CLOSED))
        assert code(ledger.check_hold(budgets, 5)) == "BUDGET_CLOSED"

    def test_over_limit_beats_debt_even_on_another_scope(self) -> None:
        budgets = (budget(debt=5, remaining=995 - 5), budget("x:y", is_over_limit=True))
        assert code(ledger.check_hold(budgets, 5)) == "OVERDRAFT_LIMIT_EXCEEDED"

    def test_debt_blocks_only_without_overdraft_allowance(self) -> None:
        in_debt = budget(debt=5, remaining=995)
        assert code(ledger.check_hold((in_debt,), 5)) == "DEBT_OUTSTANDING"
        allowed = attrs.evolve(in_debt, overdraft_limit=10)
        assert ledger.check_hold((allowed,), 5) is None

    def test_debt_beats_insufficient(self) -> None:
        budgets = (budget(remaining=0, allocated=0), budget("x:y", debt=1, remaining=999))
        assert code(ledger.check_hold(budgets, 5)) == "DEBT_OUTSTANDING"

    def test_insufficient_remaining(self) -> None:
        assert code(ledger.check_hold((budget(remaining=4, spent=996),), 5)) == "BUDGET_EXCEEDED"
        assert ledger.check_hold((budget(remaining=5, spent=995),), 5) is None


class TestSettle:
    def test_under_estimate_returns_the_rest(self) -> None:
        record, held = reservation((budget(),), 100)
        outcome = ledger.commit(
            record, held, actual=Amount.tokens(60), metrics=None, metadata=None, now_ms=NOW
        )
        assert isinstance(outcome, ledger.Settled)
        (after,) = outcome.budgets
        assert (after.remaining, after.reserved, after.spent) == (940, 0, 60)
        assert outcome.charged == Amount.tokens(60)
        assert outcome.released == Amount.tokens(40)
        assert outcome.reservation().state is LeaseState.COMMITTED
        assert identity_holds(after)

    def test_reject_refuses_any_overage_and_keeps_the_hold(self) -> None:
        record, held = reservation((budget(),), 100, OveragePolicy.REJECT)
        outcome = ledger.commit(
            record, held, actual=Amount.tokens(101), metrics=None, metadata=None, now_ms=NOW
        )
        assert code(outcome) == "BUDGET_EXCEEDED"

    def test_allow_if_available_caps_and_marks_only_uncovered_scopes(self) -> None:
        root = budget("tenant:t", 1_000)
        leaf = budget("tenant:t/agent:a", 130)
        record, held = reservation((root, leaf), 100, OveragePolicy.ALLOW_IF_AVAILABLE)
        outcome = ledger.commit(
            record, held, actual=Amount.tokens(150), metrics=None, metadata=None, now_ms=NOW
        )
        assert isinstance(outcome, ledger.Settled)
        after_root, after_leaf = outcome.budgets
        assert outcome.charged == Amount.tokens(130)
        assert outcome.released is None
        assert (after_leaf.remaining, after_leaf.spent, after_leaf.debt) == (0, 130, 0)
        assert after_leaf.is_over_limit
        assert not after_root.is_over_limit
        assert (after_root.remaining, after_root.spent) == (870, 130)
        assert all(identity_holds(b) for b in outcome.budgets)

    def test_overdraft_turns_only_the_uncovered_part_into_debt(self) -> None:
        record, held = reservation((budget(allocated=120, overdraft_limit=100),), 100)
        record = attrs.evolve(record, overage_policy=OveragePolicy.ALLOW_WITH_OVERDRAFT)
        outcome = ledger.commit(
            record, held, actual=Amount.tokens(150), metrics=None, metadata=None, now_ms=NOW
        )
        assert isinstance(outcome, ledger.Settled)
        (after,) = outcome.budgets
        assert outcome.charged == Amount.tokens(150)
        assert (after.spent, after.debt, after.remaining) == (120, 30, -30)
        assert not after.is_over_limit
        assert identity_holds(after)

    def test_overdraft_past_the_limit_is_refused_without_change(self) -> None:
        start = budget(allocated=100, overdraft_limit=20)
        record, held = reservation((start,), 100)
        record = attrs.evolve(record, overage_policy=OveragePolicy.ALLOW_WITH_OVERDRAFT)
        outcome = ledger.commit(
            record, held, actual=Amount.tokens(121), metrics=None, metadata=None, now_ms=NOW
        )
        assert code(outcome) == "OVERDRAFT_LIMIT_EXCEEDED"

    def test_overdraft_without_limit_behaves_as_allow_if_available(self) -> None:
        settled = ledger.settle(
            (budget(allocated=10),),
            held=0,
            actual=15,
            policy=OveragePolicy.ALLOW_WITH_OVERDRAFT,
            now_ms=NOW,
        )
        assert isinstance(settled, ledger.Settlement)
        (after,) = settled.budgets
        assert (settled.charged, after.debt, after.remaining, after.is_over_limit) == (
            10,
            0,
            0,
            True,
        )


class TestLifecycle:
    def test_release_returns_the_hold(self) -> None:
        record, held = reservation((budget(),), 100)
        outcome = ledger.release(record, held, reason="done", now_ms=NOW)
        assert isinstance(outcome, ledger.Released)
        assert outcome.budgets == (attrs.evolve(budget(), updated_at_ms=NOW),)
        assert outcome.reservation().state is LeaseState.RELEASED
        assert code(ledger.release(outcome.reservation(), held, reason=None, now_ms=NOW)) == (
            ErrorCode.RESERVATION_FINALIZED.value
        )

    def test_settlement_inside_grace_works_and_after_it_expires(self) -> None:
        record, held = reservation((budget(),), 100)
        in_grace = record.expires_at_ms + record.grace_period_ms
        assert isinstance(
            ledger.release(record, held, reason=None, now_ms=in_grace), ledger.Released
        )
        lapsed = ledger.release(record, held, reason=None, now_ms=in_grace + 1)
        assert isinstance(lapsed, ledger.Lapsed)
        assert lapsed.rejection.status == 410
        assert lapsed.expired.reservation.state is LeaseState.EXPIRED
        assert lapsed.expired.budgets[0].reserved == 0

    def test_unit_mismatch_on_commit(self) -> None:
        record, held = reservation((budget(),), 100)
        outcome = ledger.commit(
            record, held, actual=Amount.credits(1), metrics=None, metadata=None, now_ms=NOW
        )
        assert code(outcome) == "UNIT_MISMATCH"

    def test_extend_moves_from_current_expiry_and_counts(self) -> None:
        record, _ = reservation((budget(),), 100)
        once = ledger.extend(record, extend_by_ms=5_000, now_ms=NOW)
        assert isinstance(once, ReservationRecord)
        assert once.expires_at_ms == record.expires_at_ms + 5_000
        twice = ledger.extend(once, extend_by_ms=5_000, now_ms=NOW)
        assert isinstance(twice, ReservationRecord)
        assert code(ledger.extend(twice, extend_by_ms=1, now_ms=NOW)) == "MAX_EXTENSIONS_EXCEEDED"

    def test_extend_lead_is_clamped_to_the_maximum_ttl(self) -> None:
        record, _ = reservation((budget(),), 100)
        once = ledger.extend(record, extend_by_ms=86_400_000, now_ms=NOW)
        assert isinstance(once, ReservationRecord)
        assert once.expires_at_ms == NOW + record.max_ttl_ms

    def test_extend_has_no_grace(self) -> None:
        record, _ = reservation((budget(),), 100)
        late = ledger.extend(record, extend_by_ms=1, now_ms=record.expires_at_ms + 1)
        assert isinstance(late, Rejection)
        assert (late.status, late.error) == (410, "RESERVATION_EXPIRED")

    def test_expire_only_after_grace(self) -> None:
        record, held = reservation((budget(),), 100)
        deadline = record.expires_at_ms + record.grace_period_ms
        assert ledger.expire(record, held, deadline) is None
        expired = ledger.expire(record, held, deadline + 1)
        assert expired is not None
        assert expired.budgets[0].remaining == 1_000
        assert ledger.effective_state(record, deadline + 1) is LeaseState.EXPIRED
        assert ledger.expire(expired.reservation, expired.budgets, deadline + 2) is None


class TestFunding:
    @pytest.mark.parametrize(
        ("operation", "amount", "expected"),
        [
            (FundingOperation.CREDIT, 50, (1_050, 1_050 - 300)),
            (FundingOperation.DEBIT, 50, (950, 950 - 300)),
            (FundingOperation.RESET, 400, (400, 100)),
            (FundingOperation.RESET_SPENT, 400, (400, 400 - 100)),
        ],
    )
    def test_operations_keep_the_identity(
        self, operation: FundingOperation, amount: int, expected: tuple[int, int]
    ) -> None:
        start = budget(remaining=700, reserved=100, spent=200)
        funded = ledger.fund(start, operation, amount, spent=None, now_ms=NOW)
        assert isinstance(funded, Budget)
        assert (funded.allocated, funded.remaining) == expected
        assert identity_holds(funded)

    def test_debit_cannot_take_remaining_below_zero(self) -> None:
        assert code(ledger.fund(budget(), FundingOperation.DEBIT, 1_001, spent=None, now_ms=0)) == (
            "BUDGET_EXCEEDED"
        )

    def test_repay_debt_clears_debt_first_and_over_limit(self) -> None:
        start = budget(allocated=100, remaining=-50, spent=100, debt=50, is_over_limit=True)
        repaid = ledger.fund(start, FundingOperation.REPAY_DEBT, 80, spent=None, now_ms=NOW)
        assert isinstance(repaid, Budget)
        assert (repaid.debt, repaid.spent, repaid.allocated, repaid.remaining) == (0, 150, 180, 30)
        assert not repaid.is_over_limit
        assert identity_holds(repaid)

    def test_frozen_budget_cannot_be_funded(self) -> None:
        frozen = budget(status=BudgetStatus.FROZEN)
        assert code(ledger.fund(frozen, FundingOperation.CREDIT, 1, spent=None, now_ms=0)) == (
            "BUDGET_FROZEN"
        )

    def test_credit_overflow_is_refused(self) -> None:
        full = budget(allocated=2**63 - 1)
        assert code(ledger.fund(full, FundingOperation.CREDIT, 1, spent=None, now_ms=0)) == (
            "INVALID_REQUEST"
        )


def test_with_balances_changes_the_balances_and_keeps_every_other_field() -> None:
    """Every field is set away from its default, so a field ``with_balances`` forgot
    to copy would come back as its default and differ from ``attrs.evolve``'s copy."""
    original = Budget(
        scope="tenant:t/agent:a",
        unit=Unit.USD_MICROCENTS,
        tenant_id="t",
        ledger_id="l-1",
        allocated=1_000,
        remaining=500,
        reserved=100,
        spent=300,
        debt=100,
        overdraft_limit=200,
        is_over_limit=True,
        status=BudgetStatus.FROZEN,
        commit_overage_policy=OveragePolicy.ALLOW_WITH_OVERDRAFT,
        rollover_policy=RolloverPolicy.CARRY_FORWARD,
        period_start_ms=1,
        period_end_ms=2,
        metadata={"team": "search"},
        created_at_ms=3,
        updated_at_ms=4,
    )
    for field in attrs.fields(Budget):
        assert getattr(original, field.name) != field.default, f"set {field.name} in this test"
    changed = original.with_balances(
        remaining=400, reserved=150, spent=350, debt=100, updated_at_ms=9
    )
    assert changed == attrs.evolve(
        original, remaining=400, reserved=150, spent=350, debt=100, updated_at_ms=9
    )
