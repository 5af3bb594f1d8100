"""One demo run: the stage (server, provisioning, provider), the agent, the report.

Effects live here; the agent loop (:mod:`._agent`) and the display
(:mod:`._view`) only see a guarded client and callbacks.
"""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, final

import anyio
import attrs
from returns.pipeline import is_successful
from rich.console import Console

from cycleguard import Amount, Caps, ClientConfig, CyclesClient, ReservationStatus, Subject, Unit
from cycleguard._demo._agent import AgentEnd, BeforeCall, GaveUp, run_agent
from cycleguard._demo._script import offline_answers
from cycleguard._demo._view import DemoView, format_amount
from cycleguard._journal import JournalConfig
from cycleguard._settlement import Settlement
from cycleguard.admin import (
    AdminClient,
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    PolicyCreateRequest,
    TenantCreateRequest,
)
from cycleguard.cli._output import describe_error
from cycleguard.metering import TokenCounter, usd_to_microcents
from cycleguard.testing import FakeOpenAI

if TYPE_CHECKING:
    from collections.abc import Generator
    from decimal import Decimal

    from openai import AsyncOpenAI
    from returns.result import Result

    from cycleguard import Balance
    from cycleguard._core._json import JsonObject
    from cycleguard.errors import CyclesError

__all__ = ("DemoError", "run")

TENANT = "demo"
AGENT = "researcher"
TENANT_SCOPE = f"tenant:{TENANT}"
AGENT_SCOPE = f"{TENANT_SCOPE}/agent:{AGENT}"
OUTPUT_CAP = 256
"""The policy's ``max_tokens`` cap for every agent of the tenant."""
TENANT_BUDGET_FACTOR = 10
"""The tenant's budget is this many times the agent's, so the agent's runs out first."""
CLEANUP_SECONDS = 10.0


class DemoError(Exception):
    """Setting the stage failed; the message is the one line the user sees."""


@final
@attrs.frozen(kw_only=True)
class Stage:
    """What the demo runs against."""

    cycles_url: str
    admin_key: str = attrs.field(repr=False)
    journal_dir: Path
    unit: Unit
    agent_budget: int
    model: str
    openai_base_url: str | None
    fake: FakeOpenAI | None
    fake_latency: float


def run(
    *,
    backend: Literal["asyncio", "trio"],
    model: str,
    usd: Decimal,
    tokens: int,
    offline: bool,
    pace: float | None,
    fake_latency: float,
    max_steps: int,
    data_dir: Path | None,
) -> int:
    """Set the stage, run the demo on ``backend``, tear the stage down; the exit code.

    Raises:
        DemoError: the stage could not be set (the message is one line).
    """
    console = Console(highlight=False)
    online = bool(os.environ.get("OPENAI_API_KEY")) and not offline
    unit = Unit.USD_MICROCENTS if online else Unit.TOKENS
    agent_budget = usd_to_microcents(usd) if online else tokens
    with ExitStack() as stack:
        directory = stack.enter_context(_data_directory(data_dir))
        stage = stack.enter_context(
            _stage(directory, unit, agent_budget, model, online=online, fake_latency=fake_latency)
        )
        view = DemoView(console, agent_scope=AGENT_SCOPE)
        if pace is None:
            pace = 0.3 if console.is_terminal else 0.0
        main = partial(_demo, stage, view, pace=pace, steps=max_steps)
        return anyio.run(main, backend=backend)
    raise AssertionError("unreachable: the block returns")


@contextmanager
def _data_directory(requested: Path | None) -> Generator[Path]:
    if requested is None:
        with tempfile.TemporaryDirectory(prefix="cycleguard-demo-") as name:
            yield Path(name)
        return
    try:
        requested.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DemoError(f"cannot use {requested} as the data directory: {error}") from None
    yield requested


@contextmanager
def _stage(
    directory: Path,
    unit: Unit,
    agent_budget: int,
    model: str,
    *,
    online: bool,
    fake_latency: float,
) -> Generator[Stage]:
    """Serve the Cycles server (and the fake OpenAI endpoint offline) in background threads."""
    from cycleguard.server.app import CyclesServer
    from cycleguard.server.stores.sqlite import sqlite_store
    from cycleguard.testing._serve import serve_in_thread

    database = directory / "cycles.db"
    if database.exists():
        raise DemoError(f"{database} already exists: give the demo an empty --data-dir")
    admin_key = secrets.token_urlsafe(24)
    server = CyclesServer(open_store=partial(sqlite_store, database), admin_key=admin_key)
    with ExitStack() as stack:
        cycles_url = stack.enter_context(serve_in_thread(server.app, lifespan=True))
        fake = None if online else FakeOpenAI()
        openai_url = None if fake is None else stack.enter_context(fake.serve()) + "/v1"
        yield Stage(
            cycles_url=cycles_url,
            admin_key=admin_key,
            journal_dir=directory / "journal",
            unit=unit,
            agent_budget=agent_budget,
            model=model,
            openai_base_url=openai_url,
            fake=fake,
            fake_latency=fake_latency,
        )


def _unwrap(result: Result[JsonObject, CyclesError], doing: str, base_url: str) -> JsonObject:
    if not is_successful(result):
        reason = describe_error(result.failure(), base_url=base_url, credential="admin key")
        raise DemoError(f"{doing} failed: {reason}")
    return result.unwrap()


async def _provision(stage: Stage) -> str:
    """Tenant, key, two budgets and a caps policy, through the admin API; the key's secret."""
    unit = stage.unit
    async with AdminClient(stage.cycles_url, admin_key=stage.admin_key) as admin:
        _unwrap(
            await admin.create_tenant(TenantCreateRequest(tenant_id=TENANT, name="Demo tenant")),
            "creating the tenant",
            stage.cycles_url,
        )
        created = _unwrap(
            await admin.create_api_key(ApiKeyCreateRequest(tenant_id=TENANT, name="demo agent")),
            "creating the API key",
            stage.cycles_url,
        )
        for scope, allocated in (
            (TENANT_SCOPE, stage.agent_budget * TENANT_BUDGET_FACTOR),
            (AGENT_SCOPE, stage.agent_budget),
        ):
            _unwrap(
                await admin.create_budget(
                    BudgetCreateRequest(
                        tenant_id=TENANT, scope=scope, unit=unit, allocated=Amount(unit, allocated)
                    )
                ),
                f"creating the budget of {scope}",
                stage.cycles_url,
            )
        _unwrap(
            await admin.create_policy(
                PolicyCreateRequest(
                    tenant_id=TENANT,
                    name="agents answer briefly",
                    scope_pattern=f"{TENANT_SCOPE}/agent:*",
                    caps=Caps(max_tokens=OUTPUT_CAP),
                )
            ),
            "creating the caps policy",
            stage.cycles_url,
        )
    secret = created.get("key_secret")
    if not isinstance(secret, str):
        raise DemoError("the server's API key answer has no key_secret")
    return secret


async def _watch_signals(scope: anyio.CancelScope, interrupted: list[bool]) -> None:
    """Turn Ctrl-C (and SIGTERM) into a cancellation, so every lease releases on the way out."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _signal in signals:
            interrupted[0] = True
            scope.cancel()
            return


def _openai_client(stage: Stage) -> AsyncOpenAI:
    from openai import AsyncOpenAI

    if stage.openai_base_url is None:
        return AsyncOpenAI(max_retries=0)
    return AsyncOpenAI(api_key="offline-demo", base_url=stage.openai_base_url, max_retries=0)


def _scripted(fake: FakeOpenAI, model: str, delay: float) -> BeforeCall:
    """Queue the fake's answers for each step (its usage counted with the real tokenizer)."""
    counter = TokenCounter.for_model(model)

    def before_call(step: int, task: str) -> None:
        fake.push(*offline_answers(step, task, counter, model=model, delay=delay))

    return before_call


def _introduce(stage: Stage, view: DemoView) -> None:
    if stage.fake is None:
        view.say(f"Calling the real OpenAI API ({stage.model}); budgets are in USD.")
    else:
        view.say("Offline: a local fake OpenAI API answers; set OPENAI_API_KEY for the real one.")


def _describe_stage(stage: Stage, view: DemoView) -> None:
    unit = "USD" if stage.unit is Unit.USD_MICROCENTS else "tokens"
    tenant_budget = format_amount(Amount(stage.unit, stage.agent_budget * TENANT_BUDGET_FACTOR))
    agent_budget = format_amount(Amount(stage.unit, stage.agent_budget))
    view.say(
        f"Cycles server {stage.cycles_url} (SQLite), provisioned through its admin API:\n"
        f"  tenant {TENANT!r} and an API key\n"
        f"  budget {TENANT_SCOPE:<30} {tenant_budget:>10} {unit}\n"
        f"  budget {AGENT_SCOPE:<30} {agent_budget:>10} {unit}\n"
        f"  policy {TENANT_SCOPE + '/agent:*':<30} caps.max_tokens = {OUTPUT_CAP}"
    )


async def _demo(stage: Stage, view: DemoView, *, pace: float, steps: int) -> int:
    """Run the demo with Ctrl-C (and SIGTERM) turned into a cancellation of it."""
    _introduce(stage, view)
    interrupted = [False]
    failure: DemoError | None = None
    end: AgentEnd | None = None
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_signals, tasks.cancel_scope, interrupted)
            end = await _run(stage, view, pace=pace, steps=steps)
            tasks.cancel_scope.cancel()
    except* DemoError as group:
        failure = next(error for error in group.exceptions if isinstance(error, DemoError))
    if failure is not None:
        raise failure
    if interrupted[0]:
        return 130
    return 1 if isinstance(end, GaveUp) else 0


async def _run(stage: Stage, view: DemoView, *, pace: float, steps: int) -> AgentEnd:
    from cycleguard.openai import GuardedOpenAI

    secret = await _provision(stage)
    _describe_stage(stage, view)
    subject = Subject(tenant=TENANT, agent=AGENT)
    config = ClientConfig(base_url=stage.cycles_url, api_key=secret, subject=Subject(tenant=TENANT))
    pricing = None
    if stage.unit is Unit.USD_MICROCENTS:
        from cycleguard.metering import GenaiPrices

        pricing = GenaiPrices()
    before_call = (
        None if stage.fake is None else _scripted(stage.fake, stage.model, stage.fake_latency)
    )
    async with CyclesClient(config) as cycles, _openai_client(stage) as client:
        settlement = Settlement(cycles, journal=JournalConfig(directory=stage.journal_dir))
        guard = GuardedOpenAI(
            cycles, client, unit=stage.unit, pricing=pricing, subject=subject, settlement=settlement
        )
        try:
            with view.live_calls():
                end = await run_agent(
                    guard,
                    cycles,
                    model=stage.model,
                    scope=AGENT_SCOPE,
                    subject=subject,
                    on_call=view.call_done,
                    on_retry=view.retrying,
                    before_call=before_call,
                    max_steps=steps,
                    pace=pace,
                )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
                await _report(view, cycles, settlement, None)
            raise
        await _report(view, cycles, settlement, end)
    return end


async def _report(
    view: DemoView, cycles: CyclesClient, settlement: Settlement, end: AgentEnd | None
) -> None:
    """How the run ended, the balances, and proof that nothing is left reserved."""
    await settlement.drain()
    if end is None:
        view.say("[bold]Interrupted.[/] Every open reservation was released on the way out.")
    else:
        view.ending(end)
    view.balances(await _balances(cycles))
    view.say(f"Reservations still held: {await _held_reservations(cycles)}")


def _described(error: CyclesError, cycles: CyclesClient) -> str:
    return describe_error(error, base_url=cycles.config.base_url, credential="API key")


async def _balances(cycles: CyclesClient) -> list[Balance]:
    found: list[Balance] = []
    async for balance in cycles.iter_balances(
        subject=Subject(tenant=TENANT), include_children=True
    ):
        if not is_successful(balance):
            raise DemoError(f"reading the balances failed: {_described(balance.failure(), cycles)}")
        found.append(balance.unwrap())
    return found


async def _held_reservations(cycles: CyclesClient) -> int:
    held = 0
    async for reservation in cycles.iter_reservations(
        subject=Subject(tenant=TENANT), status=ReservationStatus.ACTIVE
    ):
        if not is_successful(reservation):
            raise DemoError(
                f"listing reservations failed: {_described(reservation.failure(), cycles)}"
            )
        held += 1
    return held
