"""Throughput and latency of the embedded Cycles server: reserve+commit pairs over loopback.

Each server runs in its own process, started the way a user would start it
(``python -m cycleguard serve --memory`` / ``--db FILE``); the framework floor is a
bare Starlette app served by uvicorn with the same settings, whose two POST
endpoints read the body and return a fixed JSON object. One aiohttp load
generator (asyncio, this process) drives every server in the same run, with 1,
8 and 32 concurrent clients, each client on its own connection doing
reserve -> commit in a loop.

The three servers run side by side and each concurrency is measured on all of
them back to back, so the ratios compare moments close together on a shared
machine; ``--repeat`` runs the whole set again (fresh servers) and the
summary takes the median of each figure and of the per-round ratios. The
server process's CPU time per pair (from ``/proc``, where there is one) is
less sensitive to other load than the rate.

Usage::

    uv run python benchmarks/server_throughput.py [--seconds 5] [--warmup 1] [--repeat 3]

Prints pairs per second, p50/p99 latency of a request (reserve or commit, what
a caller waits for one answer) and of a pair (both requests, one after the
other), and server CPU per pair, per server and concurrency, the load average,
and the SQLite store's share of the floor's pair rate at 32 clients (target: at
least 0.5, with request p99 under 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

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


class Server(NamedTuple):
    """A running server process: where it listens, its seeded key, its process id."""

    base_url: str
    secret: str | None
    pid: int


@contextmanager
def server_process(argv: Sequence[str]) -> Generator[Server]:
    """Start a server process and wait until it serves."""
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
        yield Server(base_url, secret, process.pid)
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()


# Load ------------------------------------------------------------------------------


async def _client(
    base_url: str, secret: str | None, stop_at: float, record_from: float, latencies: Latencies
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
            reserved = time.perf_counter()
            commit = json.dumps(
                {"idempotency_key": f"c{key}", "actual": {"unit": "TOKENS", "amount": 8}}
            )
            async with http.post(
                f"/v1/reservations/{reservation['reservation_id']}/commit", data=commit
            ) as response:
                assert response.status == 200, await response.text()
                await response.read()
            if started >= record_from:
                ended = time.perf_counter()
                latencies.pairs.append(ended - started)
                latencies.requests.extend((reserved - started, ended - reserved))


class Latencies(NamedTuple):
    """Seconds per pair (reserve, then commit) and per request (either one)."""

    pairs: list[float]
    requests: list[float]


class Result(NamedTuple):
    """One server at one concurrency."""

    rate: float
    """Pairs per second."""
    p50: float
    """Milliseconds per request (reserve or commit), median."""
    p99: float
    """Milliseconds per request, 99th percentile."""
    pair_p50: float
    """Milliseconds per pair (both requests), median."""
    pair_p99: float
    """Milliseconds per pair, 99th percentile."""
    cpu: float | None
    """Server process CPU microseconds per pair (``None`` where ``/proc`` is missing)."""


def percentile(seconds: Sequence[float], share: float) -> float:
    """The ``share`` quantile of ``seconds``, in milliseconds (nearest rank)."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(server: Server, clients: int, seconds: float, warmup: float) -> Result:
    """Pairs per second, latency and server CPU over ``seconds`` after ``warmup``."""
    latencies = Latencies([], [])
    now = time.perf_counter()
    record_from, stop_at = now + warmup, now + warmup + seconds

    async def cpu_at_start() -> float | None:
        await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
        return _cpu_seconds(server.pid)

    started_cpu, *_ = await asyncio.gather(
        cpu_at_start(),
        *(
            _client(server.base_url, server.secret, stop_at, record_from, latencies)
            for _ in range(clients)
        ),
    )
    ended_cpu = _cpu_seconds(server.pid)
    pairs = len(latencies.pairs)
    cpu = None
    if started_cpu is not None and ended_cpu is not None and pairs:
        cpu = (ended_cpu - started_cpu) / pairs * 1e6
    return Result(
        pairs / seconds,
        percentile(latencies.requests, 0.50),
        percentile(latencies.requests, 0.99),
        percentile(latencies.pairs, 0.50),
        percentile(latencies.pairs, 0.99),
        cpu,
    )


def _line(name: str, clients: int, result: Result) -> str:
    cpu = "" if result.cpu is None else f"  server CPU {result.cpu:6.0f} us/pair"
    return (
        f"{name:<18} clients={clients:>2}  {result.rate:6.0f} pairs/s  "
        f"request p50 {result.p50:6.2f} p99 {result.p99:6.2f} ms  "
        f"pair p50 {result.pair_p50:6.2f} p99 {result.pair_p99:6.2f} ms{cpu}"
    )


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} CPUs"


def run_round(seconds: float, warmup: float) -> dict[str, dict[int, Result]]:
    """Start the three servers side by side; measure each concurrency on each in turn."""
    results: dict[str, dict[int, Result]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        seed = Path(tmp) / "seed.toml"
        seed.write_text(SEED)
        serve = ["-m", "cycleguard", "serve", "--port", "0", "--seed", str(seed)]
        argvs = {
            FLOOR: [__file__, "--floor-server", "0"],
            "cycleguard memory": [*serve, "--memory"],
            "cycleguard sqlite": [*serve, "--db", str(Path(tmp) / "bench.db")],
        }
        servers = {name: stack.enter_context(server_process(argv)) for name, argv in argvs.items()}
        for clients in CONCURRENCY:
            for name, server in servers.items():
                result = asyncio.run(measure(server, clients, seconds, warmup))
                results.setdefault(name, {})[clients] = result
                print(_line(name, clients, result), flush=True)
    return results


FLOOR = "starlette floor"


def main() -> None:
    """Run every server at every concurrency, ``--repeat`` times, and print the medians."""
    parser = argparse.ArgumentParser(description="Cycles server throughput benchmark.")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (fresh servers each)")
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server is not None:
        run_floor(args.floor_server)
        return
    print(f"start: {_load()}", flush=True)
    rounds: list[dict[str, dict[int, Result]]] = []
    for index in range(args.repeat):
        print(f"round {index + 1} of {args.repeat}", flush=True)
        rounds.append(run_round(args.seconds, args.warmup))
    print(f"end: {_load()}")
    print(f"\nmedian of {args.repeat} round(s):")
    summary: dict[str, dict[int, Result]] = {}
    for name in rounds[0]:
        for clients in CONCURRENCY:
            cells = [one[name][clients] for one in rounds]
            cpus = [cell.cpu for cell in cells if cell.cpu is not None]
            result = Result(
                statistics.median(cell.rate for cell in cells),
                statistics.median(cell.p50 for cell in cells),
                statistics.median(cell.p99 for cell in cells),
                statistics.median(cell.pair_p50 for cell in cells),
                statistics.median(cell.pair_p99 for cell in cells),
                statistics.median(cpus) if cpus else None,
            )
            summary.setdefault(name, {})[clients] = result
            print(_line(name, clients, result))

    def share(name: str) -> float:
        return statistics.median(one[name][32].rate / one[FLOOR][32].rate for one in rounds)

    memory_share, sqlite_share = share("cycleguard memory"), share("cycleguard sqlite")
    sqlite_p99 = summary["cycleguard sqlite"][32].p99
    print()
    print(
        f"at 32 clients (median of per-round ratios): memory {memory_share:.2f} x floor, "
        f"sqlite {sqlite_share:.2f} x floor"
    )
    verdict = "met" if sqlite_share >= 0.5 and sqlite_p99 < 50 else "NOT met"
    print(
        f"target (sqlite >= 0.5 x floor at 32 clients, request p99 < 50 ms): {verdict} "
        f"(sqlite request p99 {sqlite_p99:.1f} ms, "
        f"pair p99 {summary['cycleguard sqlite'][32].pair_p99:.1f} ms)"
    )


if __name__ == "__main__":
    main()
