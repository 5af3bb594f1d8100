"""Codec and client overhead per call, in microseconds (median of repeated runs).

Measures, in one process and one run:

- encode + decode of a create-reservation and of a commit exchange (pure codec);
- a full ``CyclesClient`` call over ``MockTransport`` (validation, encoding,
  transport hop, decoding), on asyncio and on trio, next to the bare transport
  hop with a prebuilt request (the floor), so the ratio is the client's cost.

Run: ``uv run python benchmarks/client_overhead.py [--calls N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING

import anyio

from cycleguard import (
    Action,
    Amount,
    ClientConfig,
    CommitRequest,
    CommitResponse,
    CyclesClient,
    ReservationCreateRequest,
    ReservationCreateResponse,
    StandardMetrics,
    Subject,
)
from cycleguard._core import _wire
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.mock import MockTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SUBJECT = Subject(tenant="acme", workspace="prod", agent="summarizer")
ACTION = Action("llm.completion", "openai:gpt-4o-mini")
GRANT = json.dumps(
    {
        "decision": "ALLOW",
        "reservation_id": "rsv_1",
        "reserved": {"unit": "TOKENS", "amount": 1500},
        "expires_at_ms": 1712956830000,
        "remaining_ttl_ms": 60000,
        "scope_path": "tenant:acme/workspace:prod/agent:summarizer",
        "affected_scopes": [
            "tenant:acme",
            "tenant:acme/workspace:prod",
            "tenant:acme/workspace:prod/agent:summarizer",
        ],
    }
).encode()
COMMITTED = json.dumps(
    {
        "status": "COMMITTED",
        "charged": {"unit": "TOKENS", "amount": 1234},
        "released": {"unit": "TOKENS", "amount": 266},
    }
).encode()


def per_call_us(run: Callable[[int], float], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the microseconds per call of ``run(calls)``."""
    return statistics.median(run(calls) / calls * 1e6 for _ in range(repeats))


def codec_create(calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        request = ReservationCreateRequest(
            idempotency_key=f"k{i}", subject=SUBJECT, action=ACTION, estimate=Amount.tokens(1500)
        )
        _wire.encode(request)
        _wire.decode(GRANT, ReservationCreateResponse).unwrap()
    return time.perf_counter() - start


def codec_commit(calls: int) -> float:
    start = time.perf_counter()
    metrics = StandardMetrics(tokens_input=1000, tokens_output=234, latency_ms=800)
    for i in range(calls):
        request = CommitRequest(
            idempotency_key=f"c{i}", actual=Amount.tokens(1234), metrics=metrics
        )
        _wire.encode(request)
        _wire.decode(COMMITTED, CommitResponse).unwrap()
    return time.perf_counter() - start


def answer(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, (), COMMITTED if request.url.endswith("/commit") else GRANT)


def timed_async(backend: str, body: Callable[[int], Awaitable[None]]) -> Callable[[int], float]:
    def run(calls: int) -> float:
        async def main() -> float:
            start = time.perf_counter()
            await body(calls)
            return time.perf_counter() - start

        return anyio.run(main, backend=backend)

    return run


async def client_pairs(calls: int) -> None:
    config = ClientConfig(base_url="http://cycles.test", api_key="k")
    async with CyclesClient(config, transport=MockTransport(answer)) as cycles:
        for _ in range(calls):
            reserved = await cycles.create_reservation(
                subject=SUBJECT, action=ACTION, estimate=Amount.tokens(1500)
            )
            await cycles.commit_reservation(reserved.unwrap().reservation_id, Amount.tokens(1234))


async def transport_floor(calls: int) -> None:
    transport = MockTransport(answer)
    create = HttpRequest("POST", "http://cycles.test/v1/reservations", (), b"{}")
    commit = HttpRequest("POST", "http://cycles.test/v1/reservations/rsv_1/commit", (), b"{}")
    for _ in range(calls):
        await transport.send(create)
        await transport.send(commit)
    await transport.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Codec and client overhead per call.")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    calls, repeats = args.calls, args.repeats
    print(f"median of {repeats} runs x {calls} calls, microseconds per call")
    create = per_call_us(codec_create, calls, repeats)
    commit = per_call_us(codec_commit, calls, repeats)
    print(f"codec create-reservation (encode+decode): {create:8.1f}")
    print(f"codec commit (encode+decode):             {commit:8.1f}")
    for backend in ("asyncio", "trio"):
        client = per_call_us(timed_async(backend, client_pairs), calls, repeats) / 2
        floor = per_call_us(timed_async(backend, transport_floor), calls, repeats) / 2
        print(
            f"{backend:8s} client call over MockTransport:     {client:8.1f}"
            f"   (bare transport hop {floor:.1f}; client overhead {client - floor:.1f})"
        )


if __name__ == "__main__":
    main()
