"""The demo's agent loop: guarded OpenAI calls until the agent's budget runs out.

Each step is one guarded chat call (every other one streamed). A failure is a
value; one ``match`` decides what the agent does with it, as a production
agent would: back off on a rate limit, try again on a provider outage, and
stop gracefully when the budget says no.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, final

import anyio
import attrs
from returns.pipeline import is_successful

from cycleguard import Amount, Caps, Decision, SignedAmount
from cycleguard._demo._script import REQUESTED_OUTPUT_TOKENS, TASKS, messages_for
from cycleguard.errors import BudgetExceeded
from cycleguard.openai import (
    Charge,
    OpenAICallError,
    ProviderConnectionFailed,
    ProviderRateLimited,
    ProviderStatusError,
)

if TYPE_CHECKING:
    from cycleguard import CyclesClient, Subject
    from cycleguard.openai import GuardedOpenAI

__all__ = (
    "AgentEnd",
    "BudgetRanOut",
    "CallRecord",
    "GaveUp",
    "StepsDone",
    "run_agent",
)

RETRIES_PER_STEP = 3


@final
@attrs.frozen(kw_only=True)
class CallRecord:
    """One guarded call as the display shows it."""

    step: int
    streamed: bool
    decision: Decision
    caps: Caps | None
    reserved: Amount
    committed: Amount
    estimated: bool
    remaining: SignedAmount | None
    answer: str

    @property
    def capped_output_tokens(self) -> int | None:
        """The output ceiling the provider saw, when the policy lowered it."""
        if self.caps is None or self.caps.max_tokens is None:
            return None
        return min(self.caps.max_tokens, REQUESTED_OUTPUT_TOKENS)


@final
@attrs.frozen(kw_only=True)
class BudgetRanOut:
    """The agent's budget refused the next call: the run ends as designed."""

    error: BudgetExceeded
    step: int


@final
@attrs.frozen(kw_only=True)
class GaveUp:
    """Another failure ended the run."""

    error: OpenAICallError
    step: int


@final
@attrs.frozen(kw_only=True)
class StepsDone:
    """The step limit came before the end of the budget."""

    steps: int


AgentEnd: TypeAlias = BudgetRanOut | GaveUp | StepsDone

BeforeCall: TypeAlias = Callable[[int, str], None]
OnCall: TypeAlias = Callable[[CallRecord], Awaitable[None]]
OnRetry: TypeAlias = Callable[[int, str], None]


async def _remaining(cycles: CyclesClient, subject: Subject, scope: str) -> SignedAmount | None:
    balances = await cycles.get_balances(subject=subject)
    if not is_successful(balances):
        return None
    for balance in balances.unwrap().balances:
        if balance.scope_path == scope:
            return balance.remaining
    return None


class _Grant(Protocol):
    """What a guarded call and a guarded stream both tell about their reservation."""

    @property
    def decision(self) -> Decision: ...
    @property
    def caps(self) -> Caps | None: ...
    @property
    def reserved(self) -> Amount: ...


@final
@attrs.frozen(kw_only=True)
class _Answer:
    grant: _Grant
    charge: Charge
    text: str


async def _plain_call(guard: GuardedOpenAI, model: str, task: str) -> _Answer | OpenAICallError:
    result = await guard.chat(
        model=model, messages=messages_for(task), max_completion_tokens=REQUESTED_OUTPUT_TOKENS
    )
    if not is_successful(result):
        return result.failure()
    guarded = result.unwrap()
    text = guarded.response.choices[0].message.content or ""
    return _Answer(grant=guarded, charge=guarded.charge, text=text)


async def _streamed_call(guard: GuardedOpenAI, model: str, task: str) -> _Answer | OpenAICallError:
    async with guard.open_chat_stream(
        model=model, messages=messages_for(task), max_completion_tokens=REQUESTED_OUTPUT_TOKENS
    ) as opened:
        if not is_successful(opened):
            return opened.failure()
        stream = opened.unwrap()
        parts: list[str] = []
        async for chunk in stream:
            parts.extend(choice.delta.content or "" for choice in chunk.choices)
    outcome, charge = stream.outcome, stream.charge
    if outcome is not None and not is_successful(outcome) and charge is None:
        return outcome.failure()
    if charge is None:  # the loop above always ends the stream, which settles it
        raise AssertionError("a finished stream has a charge or a failure")
    return _Answer(grant=stream, charge=charge, text="".join(parts))


def _streamed(step: int) -> bool:
    """Every other step streams its answer."""
    return step % 2 == 0


def _transient(error: OpenAICallError) -> tuple[str, float] | None:
    """What to tell the user and how long to wait, when trying again may help."""
    match error:
        case ProviderRateLimited(retry_after=wait):
            return f"rate limited; retrying in {wait or 1.0:g} s", wait or 1.0
        case ProviderStatusError(status=status) if status >= 500:
            return f"the provider answered {status}; retrying", 1.0
        case ProviderConnectionFailed():
            return "the connection to the provider failed; retrying", 1.0
        case _:
            return None


async def _run_step(
    guard: GuardedOpenAI, model: str, step: int, on_retry: OnRetry, before_call: BeforeCall | None
) -> _Answer | BudgetRanOut | GaveUp:
    """One step: the call, retried on transient provider failures; the budget's no is final."""
    task = TASKS[(step - 1) % len(TASKS)]
    call = _streamed_call if _streamed(step) else _plain_call
    if before_call is not None:
        before_call(step, task)
    attempts = 0
    while True:
        attempts += 1
        outcome = await call(guard, model, task)
        if isinstance(outcome, _Answer):
            return outcome
        match outcome:
            case BudgetExceeded():
                return BudgetRanOut(error=outcome, step=step)
            case _:
                transient = _transient(outcome)
                if transient is None or attempts == RETRIES_PER_STEP:
                    return GaveUp(error=outcome, step=step)
                note, wait = transient
                on_retry(step, note)
                await anyio.sleep(wait)


async def run_agent(
    guard: GuardedOpenAI,
    cycles: CyclesClient,
    *,
    model: str,
    scope: str,
    subject: Subject,
    on_call: OnCall,
    on_retry: OnRetry,
    before_call: BeforeCall | None = None,
    max_steps: int = 200,
    pace: float = 0.0,
) -> AgentEnd:
    """Run the agent until its budget runs out, another failure stops it, or ``max_steps``.

    ``before_call(step, task)`` runs once before each step (the offline demo
    scripts the fake's answers there); ``on_call`` gets each settled call with
    the agent scope's ``remaining`` read back from the server.
    """
    for step in range(1, max_steps + 1):
        outcome = await _run_step(guard, model, step, on_retry, before_call)
        if not isinstance(outcome, _Answer):
            return outcome
        grant, charge = outcome.grant, outcome.charge
        record = CallRecord(
            step=step,
            streamed=_streamed(step),
            decision=grant.decision,
            caps=grant.caps,
            reserved=grant.reserved,
            committed=charge.actual,
            estimated=charge.estimated,
            remaining=await _remaining(cycles, subject, scope),
            answer=outcome.text,
        )
        await on_call(record)
        await anyio.sleep(pace)
    return StepsDone(steps=max_steps)
