"""How the demo shows itself: a live table of calls, the ending, and the balances."""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, final

from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from cycleguard import Decision, Unit
from cycleguard._demo._agent import BudgetRanOut, GaveUp, StepsDone
from cycleguard._demo._script import REQUESTED_OUTPUT_TOKENS
from cycleguard.metering import MICROCENTS_PER_USD
from cycleguard.openai import ProviderStatusError

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from rich.console import Console

    from cycleguard import Amount, Balance, SignedAmount
    from cycleguard._demo._agent import AgentEnd, CallRecord
    from cycleguard.openai import OpenAICallError

__all__ = ("DemoView", "format_amount")


def format_amount(amount: Amount | SignedAmount | None) -> str:
    """An amount as people read it: tokens with separators, microcents as dollars.

    >>> from cycleguard import Amount
    >>> format_amount(Amount.tokens(12_500))
    '12,500'
    >>> format_amount(Amount(Unit.USD_MICROCENTS, 123_400))
    '$0.001234'
    >>> format_amount(Amount(Unit.USD_MICROCENTS, 150_000_001)), format_amount(Amount.tokens(0))
    ('$1.50000001', '0')
    >>> usd = Unit.USD_MICROCENTS
    >>> format_amount(Amount(usd, 0)), format_amount(Amount(usd, 10**10))
    ('$0.00', '$100.00')
    """
    if amount is None:
        return "-"
    if amount.unit is Unit.USD_MICROCENTS:
        # Exact (a microcent is 1e-8 dollars), without trailing zeros past the cents.
        dollars = f"{Decimal(amount.amount) / MICROCENTS_PER_USD:,.8f}".rstrip("0")
        whole, cents = dollars.split(".")
        return f"${whole}.{cents:0<2}"
    return f"{amount.amount:,}"


def _failure(error: OpenAICallError) -> str:
    """What ended the run, without the provider's message (it may quote a masked key)."""
    match error:
        case ProviderStatusError(status=status):
            return f"the provider answered HTTP {status} ({type(error.error).__name__})"
        case _:
            return type(error).__name__


def _decision(decision: Decision) -> str:
    if decision is Decision.ALLOW_WITH_CAPS:
        return "[yellow]allow, capped[/]"
    return "[green]allow[/]"


def _cap(record: CallRecord) -> str:
    capped = record.capped_output_tokens
    if capped is None or capped == REQUESTED_OUTPUT_TOKENS:
        return f"{REQUESTED_OUTPUT_TOKENS:,}"
    return f"{REQUESTED_OUTPUT_TOKENS:,} → {capped:,}"


@final
class DemoView:
    """Everything the demo prints, on one ``rich`` console."""

    def __init__(self, console: Console, *, agent_scope: str) -> None:
        self._console = console
        self._agent_scope = agent_scope
        self._calls = Table(title=f"Guarded calls of {agent_scope}", title_justify="left")
        self._calls.add_column("#", justify="right")
        for name in ("call", "decision"):
            self._calls.add_column(name)
        for name in ("max output", "reserved", "committed", "remaining"):
            self._calls.add_column(name, justify="right")
        self._live: Live | None = None

    def say(self, text: str) -> None:
        """One line of narration."""
        self._console.print(text, highlight=False)

    @contextmanager
    def live_calls(self) -> Generator[None]:
        """Show the call table, updated in place while the agent runs."""
        with Live(self._calls, console=self._console, refresh_per_second=8) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None
                if not self._console.is_terminal:
                    # Off a terminal, Live prints its last frame without ending the line.
                    live.console.line()

    async def call_done(self, record: CallRecord) -> None:
        """Add a settled call to the table."""
        committed = format_amount(record.committed)
        if record.estimated:
            committed = f"≈{committed}"
        self._calls.add_row(
            str(record.step),
            "stream" if record.streamed else "chat",
            _decision(record.decision),
            _cap(record),
            format_amount(record.reserved),
            committed,
            format_amount(record.remaining),
        )
        if self._live is not None:
            self._live.refresh()

    def retrying(self, step: int, note: str) -> None:
        """A transient provider failure at ``step``: the reservation was released."""
        self._console.print(f"[dim]step {step}: {note} (the hold was released)[/]")

    def ending(self, end: AgentEnd) -> None:
        """Why the agent stopped: the typed failure, matched."""
        match end:
            case BudgetRanOut(error=error, step=step):
                text = (
                    f"Step {step} was refused before it reached the model: BudgetExceeded "
                    f"({error.message}).\nThe agent stops here; nothing was sent or spent "
                    "for the refused call."
                )
                self._console.print(Panel(text, title="budget exhausted", border_style="red"))
            case GaveUp(error=error, step=step):
                self._console.print(
                    Panel(
                        f"Step {step} failed: {_failure(error)}",
                        title="the agent gave up",
                        border_style="yellow",
                    )
                )
            case StepsDone(steps=steps):
                self.say(f"The agent finished its {steps} steps within the budget.")

    def balances(self, balances: Sequence[Balance]) -> None:
        """The ledger of every budgeted scope."""
        table = Table(title="Balances", title_justify="left")
        table.add_column("scope")
        for name in ("allocated", "reserved", "spent", "remaining"):
            table.add_column(name, justify="right")
        for balance in sorted(balances, key=lambda item: item.scope_path):
            table.add_row(
                balance.scope_path,
                format_amount(balance.allocated),
                format_amount(balance.reserved),
                format_amount(balance.spent),
                format_amount(balance.remaining),
            )
        self._console.print(table)
