"""A scriptable fake Cycles server behind ``MockTransport``, a fake clock, and builders.

The fake server records every request (kind, reservation, idempotency key,
body, arrival time on the fake wall clock), answers idempotently (a repeated
key gets the first answer again) and charges its ledger once per key per
endpoint, so "settlement occurs at most once" is a fact about the ledger, not
about the number of requests. Faults are scripted per request, in order.

A restart is modelled by :func:`fresh_settlement`: a new client and a new
:class:`Settlement` built from configuration only (base URL, key, tenant,
journal directory), so only durable state crosses the boundary.
"""

from __future__ import annotations

import collections
import inspect
import json
import math
import random
from typing import TYPE_CHECKING, Literal, cast, final
from urllib.parse import unquote

import anyio
import anyio.lowlevel
import attrs

from cycleguard import Action, Amount, ClientConfig, CommitRequest, CyclesClient, Subject
from cycleguard._core._http import HttpRequest, HttpResponse
from cycleguard._core._journal_format import (
    JournalRecord,
    decode_record,
    event_fallback,
    new_record,
    standard_filename,
)
from cycleguard._core._retry import Backoff
from cycleguard._journal import Journal, JournalConfig
from cycleguard._settlement import Settlement, SettlementPolicy
from cycleguard.errors import ConnectionFailed
from cycleguard.transports.mock import MockTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from cycleguard.transports.mock import MockOutcome

BASE_URL = "http://cycles.test"
API_KEY = "test-key"
RID = "rsv_7f3a"
KEY = "5b0e9c1e-2d7a-4f0e-9a51-0c6f3f1d2b44"
SUBJECT = Subject(tenant="acme", app="chat")
ACTION = Action("llm.completion", "openai:gpt-4o-mini")
START_MS = 1_785_950_000_000

FAST = SettlementPolicy(
    max_retries=5,
    backoff=Backoff(initial=0.5, multiplier=2.0, max_delay=30.0, jitter=0.2),
    retry_budget=30.0,
    sweep_min_age=30.0,
)

Kind = Literal["commit", "event", "release", "extend", "other"]


def commit_request(amount: int = 1250, key: str = KEY) -> CommitRequest:
    """The commit every test settles, unless it says otherwise."""
    return CommitRequest(
        idempotency_key=key,
        actual=Amount.tokens(amount),
        metrics=None,
        metadata={"actual_source": "provider_usage"},
    )


@final
class FakeClock:
    """A wall clock that only moves when something sleeps on it."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self.now_ms = start_ms
        self.sleeps: list[float] = []

    def wall(self) -> int:
        """Epoch milliseconds."""
        return self.now_ms

    def advance(self, seconds: float) -> None:
        """Let time pass without sleeping (a process that was down)."""
        self.now_ms += math.ceil(seconds * 1000)

    async def sleep(self, seconds: float) -> None:
        """Record the wait and jump the clock over it."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()


@final
@attrs.frozen
class Seen:
    """One request the fake server received."""

    kind: Kind
    reservation_id: str | None
    key: str | None
    body: dict[str, object]
    at_ms: int


def _json(status: int, body: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(
        status, (("Content-Type", "application/json"), *headers), json.dumps(body).encode()
    )


def envelope(status: int, code: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """A protocol error response."""
    body = {"error": code, "message": f"{code} (fake)", "request_id": "req-fake"}
    return _json(status, body, headers)


@final
class FakeCycles:
    """The fake server: a ledger, idempotent answers and a script of faults."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.seen: list[Seen] = []
        self.ledger: dict[tuple[str, str], int] = {}
        self.expired: set[str] = set()
        self.before: list[Callable[[Seen], None]] = []
        self._replies: dict[tuple[str, str], HttpResponse] = {}
        self._script: collections.deque[Callable[..., object] | None] = collections.deque()
        self._events = 0
        self._waiters: list[tuple[int, anyio.Event]] = []

    # Scripting -------------------------------------------------------------------

    def script(self, *faults: Callable[..., object] | None) -> None:
        """Queue per-request behaviours; ``None`` answers normally."""
        self._script.extend(faults)

    def transport(self) -> MockTransport:
        """A transport that talks to this server."""
        return MockTransport(self.handler)

    # Observations ------------------------------------------------------------------

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` requests have arrived (and their fault has run)."""
        if len(self.seen) >= count:
            return
        arrived = anyio.Event()
        self._waiters.append((count, arrived))
        await arrived.wait()

    def _wake(self) -> None:
        for count, arrived in self._waiters:
            if len(self.seen) >= count:
                arrived.set()

    def of(self, kind: Kind) -> list[Seen]:
        """The requests of one kind, in arrival order."""
        return [seen for seen in self.seen if seen.kind == kind]

    @property
    def kinds(self) -> list[str]:
        """Every request's kind, in order."""
        return [seen.kind for seen in self.seen]

    @property
    def charged(self) -> int:
        """The total the ledger charged."""
        return sum(self.ledger.values())

    # Serving -------------------------------------------------------------------------

    @staticmethod
    def _parse(request: HttpRequest, now_ms: int) -> Seen:
        path = request.url.split("://", 1)[-1].split("/", 1)[-1]
        parts = path.split("/")
        body = cast("dict[str, object]", json.loads(request.body)) if request.body else {}
        kind: Kind = "other"
        rid: str | None = None
        if parts[:2] == ["v1", "reservations"] and len(parts) == 4:
            rid = unquote(parts[2])
            kind = cast("Kind", parts[3]) if parts[3] in {"commit", "release", "extend"} else kind
        elif parts == ["v1", "events"]:
            kind = "event"
        return Seen(kind, rid, request.header("X-Idempotency-Key"), body, now_ms)

    async def handler(self, request: HttpRequest) -> MockOutcome:
        """Record, run the hooks, then the next scripted fault or the normal answer."""
        seen = self._parse(request, self.clock.now_ms)
        self.seen.append(seen)
        for hook in self.before:
            hook(seen)
        fault = self._script.popleft() if self._script else None
        if fault is None:
            self._wake()
            return self.apply(seen)
        outcome = fault(seen, self)
        self._wake()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome is not None:
            return cast("MockOutcome", outcome)
        return self.apply(seen)

    def apply(self, seen: Seen) -> HttpResponse:
        """What a correct server answers: idempotent, one charge per key."""
        key = seen.key or ""
        if (seen.kind, key) in self._replies:
            return self._replies[seen.kind, key]
        actual = cast("dict[str, object]", seen.body.get("actual", {}))
        amount = cast("int", actual.get("amount", 0))
        unit = actual.get("unit", "TOKENS")
        match seen.kind:
            case "commit":
                if seen.reservation_id in self.expired:
                    return envelope(410, "RESERVATION_EXPIRED")
                reply = _json(
                    200, {"status": "COMMITTED", "charged": {"unit": unit, "amount": amount}}
                )
            case "event":
                self._events += 1
                reply = _json(
                    201,
                    {
                        "status": "APPLIED",
                        "event_id": f"evt_{self._events}",
                        "charged": {"unit": unit, "amount": amount},
                    },
                )
            case _:
                return envelope(400, "INVALID_REQUEST")
        self.ledger[seen.kind, key] = amount
        self._replies[seen.kind, key] = reply
        return reply


# Faults --------------------------------------------------------------------------------


def lost(seen: Seen, server: FakeCycles) -> MockOutcome:
    """The server applies the request; the response never arrives."""
    server.apply(seen)
    return ConnectionFailed(
        message="connection reset after the request was sent", request_sent=True
    )


def answer(
    response: HttpResponse, *, apply_first: bool = False
) -> Callable[[Seen, FakeCycles], MockOutcome]:
    """Answer with ``response`` (after applying the request when ``apply_first``)."""

    def fault(seen: Seen, server: FakeCycles) -> MockOutcome:
        if apply_first:
            server.apply(seen)
        return response

    return fault


def expire(seen: Seen, server: FakeCycles) -> None:
    """The reservation expires just before this request (answered normally: 410)."""
    if seen.reservation_id is not None:
        server.expired.add(seen.reservation_id)


def rate_limited(seconds: str) -> Callable[[Seen, FakeCycles], MockOutcome]:
    """A 429 ``LIMIT_EXCEEDED`` with ``Retry-After: seconds``; nothing applied."""
    return answer(envelope(429, "LIMIT_EXCEEDED", (("Retry-After", seconds),)))


def die(seen: Seen, server: FakeCycles) -> Awaitable[MockOutcome]:
    """Apply the request, then never answer: the process dies with it in flight."""
    server.apply(seen)

    async def forever() -> MockOutcome:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return forever()


def json_response(status: int, body: object) -> HttpResponse:
    """Any JSON answer."""
    return _json(status, body)


# Builders ------------------------------------------------------------------------------


def client_for(
    server: FakeCycles, *, api_key: str = API_KEY, tenant: str | None = None
) -> CyclesClient:
    """A new client of the fake server."""
    return CyclesClient(
        ClientConfig(base_url=BASE_URL, api_key=api_key, subject=Subject(tenant=tenant)),
        transport=server.transport(),
    )


def fresh_settlement(
    server: FakeCycles,
    journal_dir: Path | None,
    *,
    api_key: str = API_KEY,
    tenant: str | None = None,
    policy: SettlementPolicy = FAST,
    seed: int = 0,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Settlement:
    """A new client and settlement from configuration only: a process (re)start."""
    client = client_for(server, api_key=api_key, tenant=tenant)
    config = (
        JournalConfig(enabled=False)
        if journal_dir is None
        else JournalConfig(enabled=True, directory=journal_dir)
    )
    return Settlement(
        client,
        journal=config,
        policy=policy,
        rng=random.Random(seed),
        wall_clock=server.clock.wall,
        sleep=sleep or server.clock.sleep,
    )


def journal_of(journal_dir: Path, *, api_key: str = API_KEY, tenant: str | None = None) -> Journal:
    """The journal a settlement with this configuration uses."""
    return Journal(journal_dir, base_url=BASE_URL, api_key=api_key, tenant=tenant)


def make_record(
    *,
    reservation_id: str = RID,
    request: CommitRequest | None = None,
    now_ms: int = START_MS,
) -> JournalRecord:
    """The first record of a settlement, as this version writes it."""
    commit = request or commit_request()
    return new_record(
        reservation_id=reservation_id,
        base_url=BASE_URL,
        commit=commit,
        event=event_fallback(reservation_id, commit, SUBJECT, ACTION),
        now_ms=now_ms,
    )


def seed(
    journal_dir: Path,
    record: JournalRecord | None = None,
    *,
    api_key: str = API_KEY,
    tenant: str | None = None,
) -> JournalRecord:
    """Write the record a previous process left behind; return it."""
    record = record or make_record()
    assert journal_of(journal_dir, api_key=api_key, tenant=tenant).write_sync(record)
    return record


def record_path(journal_dir: Path, reservation_id: str = RID, **identity: str | None) -> Path:
    """Where the record of ``reservation_id`` lives."""
    journal = journal_of(
        journal_dir,
        api_key=identity.get("api_key") or API_KEY,
        tenant=identity.get("tenant"),
    )
    return journal.directory_sync() / standard_filename(reservation_id)


def read_record(path: Path) -> JournalRecord:
    """The record stored at ``path``."""
    return decode_record(path.read_bytes()).unwrap()


def files_under(directory: Path, pattern: str = "*") -> list[Path]:
    """Every file below ``directory`` matching ``pattern``, sorted."""
    return sorted(path for path in directory.rglob(pattern) if path.is_file())
