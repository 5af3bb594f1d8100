"""Throughput and latency of the embedded Cycles server: reserve+commit pairs over loopback.

Each server runs in its own process, started the way a user would start it
(``python -m cycleguard serve --memory`` / ``--db FILE``); the framework floor is a
bare Starlette app served by uvicorn with the same settings, whose two POST
endpoints read the body and return a fixed JSON object. One aiohttp load
generator (asyncio, this process) drives every server in the same run, with 1,
8 and 32 concurrent clients, each client on its own connection doing
reserve -> commit in a loop.

Usage::

    uv run python benchmarks/server_throughput.py [--seconds 5] [--warmup 1]

Prints pairs per second and p50/p99 latency of a pair (both requests) per
server and concurrency, and the SQLite store's share of the floor's pair rate
at 32 clients (target: at least 0.5, with p99 under 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from starlette.requests import Request

CONCURRENCY = (1, 8, 32)
TENANT = "bench"
SEED = f"""
[[tenants]]
tenant_id = "{TENANT}"
name = "Benchmark"

[[api_keys]]
tenant_id = "{TENANT}"
name = "load"

[[budgets]]
tenant_id = "{TENANT}"
scope = "tenant:{TENANT}"
unit = "TOKENS"
allocated = 4_000_000_000_000_000_000

[[budgets]]
tenant_id = "{TENANT}"
scope = "tenant:{TENANT}/agent:load"
unit = "TOKENS"
allocated = 4_000_000_000_000_000_000
"""
_SERVING = re.compile(r"on (http://[0-9.]+:[0-9]+)")


# The floor: a bare Starlette app --------------------------------------------------


def run_floor(port: int) -> None:
    """Serve the floor app (in a child process) until terminated."""
    reserved = (
        b'{"decision":"ALLOW","reservation_id":"00000000-0000-0000-0000-000000000000",'
        b'"affected_scopes":["tenant:bench"],"reserved":{"unit":"TOKENS","amount":10},'
        b'"expires_at_ms":1,"remaining_ttl_ms":60000,"scope_path":"tenant:bench"}'
    )
    committed = b'{"status":"COMMITTED","charged":{"unit":"TOKENS","amount":8}}'

    async def reserve(request: Request) -> Response:
        await request.body()
        return Response(reserved, media_type="application/json")

    async def commit(request: Request) -> Response:
        await request.body()
        return Response(committed, media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/reservations", reserve, methods=["POST"]),
            Route("/v1/reservations/{rid}/commit", commit, methods=["POST"]),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning")
    print(f"floor serving on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


# Servers in child processes ----------------------------------------------------------


@contextmanager
def server_process(argv: Sequence[str]) -> Generator[tuple[str, str | None]]:
    """Start a server process; yield (base URL, seeded API key secret or None)."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    secret: str | None = None
    base_url = ""
    try:
        for line in process.stdout:
            if "API key" in line:
                secret = line.rsplit(": ", 1)[1].strip()
            match = _SERVING.search(line)
            if match:
                base_url = match.group(1)
                break
        if not base_url:
            raise RuntimeError(f"server {argv} did not start")
        yield base_url, secret
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()


# Load ------------------------------------------------------------------------------


async def _client(
    base_url: str, secret: str | None, stop_at: float, record_from: float, latencies: list[float]
) -> None:
    headers = {"X-Cycles-API-Key": secret or "", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as http:
        while (started := time.perf_counter()) < stop_at:
            key = uuid.uuid4().hex
            body = json.dumps(
                {
                    "idempotency_key": key,
                    "subject": {"tenant": TENANT, "agent": "load"},
                    "action": {"kind": "llm.completion", "name": "m"},
                    "estimate": {"unit": "TOKENS", "amount": 10},
                }
            )
            async with http.post("/v1/reservations", data=body) as response:
                assert response.status == 200, await response.text()
                reservation = cast("dict[str, object]", await response.json())
            commit = json.dumps(
                {"idempotency_key": f"c{key}", "actual": {"unit": "TOKENS", "amount": 8}}
            )
            async with http.post(
                f"/v1/reservations/{reservation['reservation_id']}/commit", data=commit
            ) as response:
                assert response.status == 200, await response.text()
                await response.read()
            if started >= record_from:
                latencies.append(time.perf_counter() - started)


async def measure(
    base_url: str, secret: str | None, clients: int, seconds: float, warmup: float
) -> tuple[float, float, float]:
    """(pairs per second, p50 ms, p99 ms) over ``seconds`` after ``warmup``."""
    latencies: list[float] = []
    now = time.perf_counter()
    record_from, stop_at = now + warmup, now + warmup + seconds
    await asyncio.gather(
        *(_client(base_url, secret, stop_at, record_from, latencies) for _ in range(clients))
    )
    ordered = sorted(latencies)

    def percentile(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return len(ordered) / seconds, percentile(0.50), percentile(0.99)


def main() -> None:
    """Run every server at every concurrency and print the table."""
    parser = argparse.ArgumentParser(description="Cycles server throughput benchmark.")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server is not None:
        run_floor(args.floor_server)
        return
    results: dict[str, dict[int, tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.toml"
        seed.write_text(SEED)
        serve = ["-m", "cycleguard", "serve", "--port", "0", "--seed", str(seed)]
        servers = {
            "starlette floor": [__file__, "--floor-server", "0"],
            "cycleguard memory": [*serve, "--memory"],
            "cycleguard sqlite": [*serve, "--db", str(Path(tmp) / "bench.db")],
        }
        for name, argv in servers.items():
            with server_process(argv) as (base_url, secret):
                results[name] = {}
                for clients in CONCURRENCY:
                    results[name][clients] = asyncio.run(
                        measure(base_url, secret, clients, args.seconds, args.warmup)
                    )
                    rate, p50, p99 = results[name][clients]
                    print(
                        f"{name:<18} clients={clients:>2}  {rate:8.0f} pairs/s  "
                        f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
                        flush=True,
                    )
    floor = results["starlette floor"][32][0]
    sqlite_rate, _, sqlite_p99 = results["cycleguard sqlite"][32]
    memory_rate = results["cycleguard memory"][32][0]
    print()
    print(
        f"at 32 clients: memory {memory_rate / floor:.2f} x floor, "
        f"sqlite {sqlite_rate / floor:.2f} x floor"
    )
    verdict = "met" if sqlite_rate >= floor / 2 and sqlite_p99 < 50 else "NOT met"
    print(f"target (sqlite >= 0.5 x floor at 32 clients, p99 < 50 ms): {verdict}")


if __name__ == "__main__":
    main()
