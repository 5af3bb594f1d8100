"""Client CPU per guarded call (reserve + commit), and memory over 10,000 calls.

One run, one client process, the embedded server in another process (memory
store). For each variant the client process's CPU time (``time.process_time``,
every thread: the journal's writer thread counts) is divided by the number of
guarded calls; the figure is the median of repeated runs. The variants compared
in one row run interleaved, one after the other in every round, so that load
from elsewhere on the machine falls on all of them alike. Variants:

- cycleguard ``guarded()`` on each transport (h11 default, httpx, httpx2,
  aiohttp), settlement journal on (and, on asyncio with h11, off);
- the floor: the same two POSTs (reserve with a fresh key, commit) sent raw
  with the same HTTP library, nothing else;
- the official ``runcycles`` 0.5.3 SDK's ``@cycles`` decorator doing the same
  lifecycle (asyncio only; its journal on too), interleaved with the asyncio
  h11 row.

Then 10,000 guarded calls in one process (h11 transport, trio and asyncio):
RSS growth after a warm-up. Targets: cycleguard <= 1.5x its floor and <= 0.5x
runcycles per call; RSS growth < 5 MB.

Run: ``uv run python -m benchmarks.guarded_overhead [--calls N] [--repeats R]`` (from the
repository root: it imports ``benchmarks._server``)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from returns.result import Result, Success

from cycleguard import Action, Amount, ClientConfig, CyclesClient, Lease, Spent, Subject, guarded
from cycleguard.transports import HttpRequest, Transport
from cycleguard.transports.h11 import H11Transport

SUBJECT = Subject(tenant="bench", agent="bench-agent")
ACTION = Action("llm.completion", "openai:gpt-4o-mini")
Body = Callable[[int], Awaitable[None]]


def cpu_per_call_us(backend: str, body: Body, calls: int) -> float:
    """Client CPU microseconds per call, in one fresh event loop."""

    async def main() -> float:
        await body(max(10, calls // 10))  # warm the pool and caches
        start = time.process_time()
        await body(calls)
        return (time.process_time() - start) / calls * 1e6

    return anyio.run(main, backend=backend)


def interleaved(
    backend: str, bodies: dict[str, Body], calls: int, repeats: int
) -> dict[str, float]:
    """Median CPU per call of each body, running every body once per round."""
    samples: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(repeats):
        for name, body in bodies.items():
            samples[name].append(cpu_per_call_us(backend, body, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


async def _spend(_: Lease) -> Result[Spent[None], str]:
    return Success(Spent(value=None, actual=Amount.tokens(70)))


def cycleguard_body(
    base_url: str, key: str, make: Callable[[], Transport], *, journal: bool = True
) -> Body:
    async def body(calls: int) -> None:
        config = ClientConfig(base_url=base_url, api_key=key, subject=SUBJECT)
        os.environ["CYCLES_JOURNAL_ENABLED"] = "true" if journal else "false"
        async with CyclesClient(config, transport=make()) as client:
            for _ in range(calls):
                result = await guarded(client, _spend, action=ACTION, estimate=Amount.tokens(100))
                assert isinstance(result, Success), result

    return body


def _reserve_body() -> bytes:
    return json.dumps(
        {
            "idempotency_key": os.urandom(16).hex(),
            "subject": {"tenant": "bench", "agent": "bench-agent"},
            "action": {"kind": "llm.completion", "name": "openai:gpt-4o-mini"},
            "estimate": {"unit": "TOKENS", "amount": 100},
        }
    ).encode()


def _commit_body() -> bytes:
    return json.dumps(
        {"idempotency_key": os.urandom(16).hex(), "actual": {"unit": "TOKENS", "amount": 70}}
    ).encode()


def h11_floor(base_url: str, key: str) -> Body:
    headers = (("X-Cycles-API-Key", key), ("Content-Type", "application/json"))

    async def body(calls: int) -> None:
        transport = H11Transport(base_url)
        try:
            for _ in range(calls):
                created = await transport.send(
                    HttpRequest("POST", f"{base_url}/v1/reservations", headers, _reserve_body())
                )
                rid = json.loads(created.unwrap().body)["reservation_id"]
                url = f"{base_url}/v1/reservations/{rid}/commit"
                (await transport.send(HttpRequest("POST", url, headers, _commit_body()))).unwrap()
        finally:
            await transport.aclose()

    return body


def httpx_floor(base_url: str, key: str, module: str) -> Body:
    async def body(calls: int) -> None:
        lib = __import__(module)
        headers = {"X-Cycles-API-Key": key, "Content-Type": "application/json"}
        async with lib.AsyncClient(base_url=base_url, headers=headers) as http:
            for _ in range(calls):
                created = await http.post("/v1/reservations", content=_reserve_body())
                rid = created.json()["reservation_id"]
                committed = await http.post(
                    f"/v1/reservations/{rid}/commit", content=_commit_body()
                )
                assert committed.status_code == 200

    return body


def aiohttp_floor(base_url: str, key: str) -> Body:
    async def body(calls: int) -> None:
        import aiohttp

        headers = {"X-Cycles-API-Key": key, "Content-Type": "application/json"}
        async with aiohttp.ClientSession(base_url=base_url, headers=headers) as http:
            for _ in range(calls):
                async with http.post("/v1/reservations", data=_reserve_body()) as created:
                    rid = (await created.json())["reservation_id"]
                url = f"/v1/reservations/{rid}/commit"
                async with http.post(url, data=_commit_body()) as committed:
                    assert committed.status == 200
                    await committed.read()

    return body


def runcycles_body(base_url: str, key: str) -> Body:
    async def body(calls: int) -> None:
        import runcycles  # the peer SDK, untyped

        config = runcycles.CyclesConfig(base_url=base_url, api_key=key, tenant="bench")
        async with runcycles.AsyncCyclesClient(config) as client:

            @runcycles.cycles(
                estimate=100,
                actual=lambda _: 70,
                action_kind="llm.completion",
                action_name="openai:gpt-4o-mini",
                unit="TOKENS",
                agent="bench-agent",
                client=client,
            )
            async def work() -> None:
                return None

            for _ in range(calls):
                await work()

    return body


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_growth_kb(base_url: str, key: str, backend: str, calls: int) -> int:
    body = cycleguard_body(base_url, key, lambda: H11Transport(base_url))

    async def main() -> int:
        await body(500)
        before = rss_kb()
        await body(calls)
        return rss_kb() - before

    return anyio.run(main, backend=backend)


def main() -> None:
    from benchmarks._server import cycles_server

    parser = argparse.ArgumentParser(description="Client CPU per guarded call.")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-calls", type=int, default=10_000)
    args = parser.parse_args()
    os.environ["CYCLES_JOURNAL_DIR"] = tempfile.mkdtemp(prefix="cycleguard-bench-journal-")
    with cycles_server() as (base_url, key):
        print(
            f"client CPU per guarded call (reserve + commit), median of {args.repeats} runs x "
            f"{args.calls} calls; server in another process"
        )
        print(f"{'loop':8s} {'library':8s} {'cycleguard':>11s} {'floor':>8s} {'ratio':>6s}")
        from cycleguard.transports.aiohttp import AiohttpTransport
        from cycleguard.transports.httpx import HttpxTransport
        from cycleguard.transports.httpx2 import Httpx2Transport

        variants: list[tuple[str, str, Callable[[], Transport], Body]] = [
            ("asyncio", "h11", lambda: H11Transport(base_url), h11_floor(base_url, key)),
            ("trio", "h11", lambda: H11Transport(base_url), h11_floor(base_url, key)),
            ("asyncio", "httpx", HttpxTransport, httpx_floor(base_url, key, "httpx")),
            ("trio", "httpx", HttpxTransport, httpx_floor(base_url, key, "httpx")),
            ("asyncio", "httpx2", Httpx2Transport, httpx_floor(base_url, key, "httpx2")),
            ("trio", "httpx2", Httpx2Transport, httpx_floor(base_url, key, "httpx2")),
            ("asyncio", "aiohttp", AiohttpTransport, aiohttp_floor(base_url, key)),
        ]
        for backend, library, make, floor in variants:
            bodies = {"cycleguard": cycleguard_body(base_url, key, make), "floor": floor}
            with_peer = (backend, library) == ("asyncio", "h11")
            if with_peer:
                bodies["journal off"] = cycleguard_body(base_url, key, make, journal=False)
                bodies["runcycles"] = runcycles_body(base_url, key)
            us = interleaved(backend, bodies, args.calls, args.repeats)
            print(
                f"{backend:8s} {library:8s} {us['cycleguard']:9.0f}us {us['floor']:6.0f}us "
                f"{us['cycleguard'] / us['floor']:5.2f}x"
            )
            if with_peer:
                print(
                    f"  journal off: {us['journal off']:.0f}us "
                    f"({us['journal off'] / us['floor']:.2f}x the floor); "
                    f"runcycles 0.5.3 @cycles (asyncio, httpx): {us['runcycles']:.0f}us per call; "
                    f"cycleguard h11 / runcycles = {us['cycleguard'] / us['runcycles']:.2f}x"
                )
        os.environ["CYCLES_JOURNAL_ENABLED"] = "true"
        for backend in ("asyncio", "trio"):
            grown = rss_growth_kb(base_url, key, backend, args.rss_calls)
            print(
                f"RSS growth over {args.rss_calls} guarded calls ({backend}, h11): "
                f"{grown / 1024:.2f} MB"
            )


if __name__ == "__main__":
    main()
