"""Throughput of every transport: reserve+commit pairs against one local endpoint.

One run measures, on asyncio and then on trio, each available transport at 1, 8 and
32 concurrent reserve+commit pairs against the same server: a bare Starlette app
served by uvicorn in a **separate process** on 127.0.0.1, answering
``POST /v1/reservations`` and ``POST /v1/reservations/{id}/commit`` with fixed JSON.

For each cell it prints pairs/s, the p50 and p99 latency of one pair, and the client
process's CPU time per pair (``time.process_time()`` delta / pairs; the server's CPU is
not counted). Every cell is measured ``--repeats`` times, interleaved across
transports so that drift hits all of them alike, and the median run is reported. The
ratios at the end (h11 vs aiohttp on asyncio, h11 vs httpx2 on trio) come from this
one run.

Usage::

    uv run python benchmarks/transport_throughput.py            # about 2.5 minutes
    uv run python benchmarks/transport_throughput.py --quick    # a smoke run

The machine should be otherwise idle; the script prints the load average before and
after so a noisy run can be recognised. The server's CPU per pair is printed too: on a
2-core machine a fast client and the pure-Python server each need about one core, so
any other load makes pairs/s converge to the ratio of total (client + server) CPU per
pair, while the client's CPU per pair stays comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final

import anyio
import attrs

from cycleguard.transports import HttpRequest, Transport
from cycleguard.transports.h11 import H11Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

CONCURRENCY: Final = (1, 8, 32)
API_KEY: Final = "bench-key"

RESERVE_RESPONSE: Final = json.dumps(
    {
        "decision": "ALLOW",
        "reservation_id": "res_01J9ZQ3M8V6Y2K4T7N5P0R1S2W",
        "affected_scopes": ["tenant:acme", "tenant:acme/workspace:prod"],
        "scope_path": "tenant:acme/workspace:prod",
        "reserved": {"unit": "USD_MICROCENTS", "amount": 5000},
        "expires_at_ms": 1767225600000,
    },
    separators=(",", ":"),
).encode()
COMMIT_RESPONSE: Final = json.dumps(
    {
        "status": "COMMITTED",
        "charged": {"unit": "USD_MICROCENTS", "amount": 4200},
        "released": {"unit": "USD_MICROCENTS", "amount": 800},
    },
    separators=(",", ":"),
).encode()


# -- the server (runs in its own process) --------------------------------------------


def create_app() -> Starlette:
    """The fixed-JSON Starlette app."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def reserve(request: Request) -> Response:
        await request.body()
        return Response(RESERVE_RESPONSE, media_type="application/json")

    async def commit(request: Request) -> Response:
        await request.body()
        return Response(COMMIT_RESPONSE, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/reservations", reserve, methods=["POST"]),
            Route("/v1/reservations/{reservation_id}/commit", commit, methods=["POST"]),
        ]
    )


def serve(port: int) -> None:
    """Run the app under uvicorn, in this process, until terminated."""
    import uvicorn

    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        backlog=1024,
    )


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants; NaN off Linux."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return float("nan")
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return server, port
    server.kill()
    raise SystemExit("the benchmark server did not start")


# -- the client ----------------------------------------------------------------------


def factories(loop: str) -> dict[str, Callable[[str], Transport]]:
    """Every transport that can run on ``loop``, by name; missing extras are skipped."""
    found: dict[str, Callable[[str], Transport]] = {
        "h11": lambda base: H11Transport(base, max_connections=64),
    }
    try:
        from cycleguard.transports.httpx2 import Httpx2Transport
    except ImportError:
        pass
    else:
        found["httpx2"] = lambda base: Httpx2Transport()
    try:
        from cycleguard.transports.httpx import HttpxTransport
    except ImportError:
        pass
    else:
        found["httpx"] = lambda base: HttpxTransport()
    if loop == "asyncio":
        try:
            from cycleguard.transports.aiohttp import AiohttpTransport
        except ImportError:
            pass
        else:
            found["aiohttp"] = lambda base: AiohttpTransport()
    return found


@attrs.frozen
class Sample:
    """One timed run of one transport at one concurrency."""

    pairs: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    latencies: tuple[float, ...]
    failures: int

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds

    @property
    def cpu_per_pair_us(self) -> float:
        return self.cpu_seconds / max(self.pairs, 1) * 1e6

    @property
    def server_cpu_per_pair_us(self) -> float:
        return self.server_cpu_seconds / max(self.pairs, 1) * 1e6


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_cell(
    factory: Callable[[str], Transport],
    base: str,
    concurrency: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> Sample:
    """Open a transport, warm it up, then run ``concurrency`` workers for ``duration``."""
    transport = factory(base)
    headers = (("Content-Type", "application/json"), ("X-Cycles-API-Key", API_KEY))
    counter = 0
    measuring = False
    stop_at = 0.0
    pairs = 0
    failures = 0
    latencies: list[float] = []

    async def pair() -> bool:
        nonlocal counter
        counter += 1
        key = f"bench-{counter}"
        reserve_body = (
            b'{"idempotency_key":"%s","subject":{"tenant":"acme","workspace":"prod"},'
            b'"action":{"kind":"llm.completion","name":"gpt-4o"},'
            b'"estimate":{"unit":"USD_MICROCENTS","amount":5000},"ttl_ms":60000}' % key.encode()
        )
        reserved = await transport.send(
            HttpRequest("POST", f"{base}/v1/reservations", headers, reserve_body)
        )
        response = reserved.value_or(None)
        if response is None or response.status != 200:
            return False
        reservation_id = json.loads(response.body)["reservation_id"]
        commit_body = (
            b'{"idempotency_key":"%s-c","actual":{"unit":"USD_MICROCENTS","amount":4200}}'
            % key.encode()
        )
        committed = await transport.send(
            HttpRequest(
                "POST", f"{base}/v1/reservations/{reservation_id}/commit", headers, commit_body
            )
        )
        response = committed.value_or(None)
        return response is not None and response.status == 200

    async def worker() -> None:
        nonlocal pairs, failures
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            succeeded = await pair()
            if measuring:
                if succeeded:
                    pairs += 1
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

    try:
        stop_at = time.perf_counter() + warmup
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        measuring = True
        server_cpu_started = process_tree_cpu(server_pid)
        cpu_started = time.process_time()
        started = time.perf_counter()
        stop_at = started + duration
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        server_cpu = process_tree_cpu(server_pid) - server_cpu_started
    finally:
        await transport.aclose()
    return Sample(pairs, elapsed, cpu, server_cpu, tuple(latencies), failures)


async def run_loop(
    loop: str, base: str, server_pid: int, names: list[str], args: argparse.Namespace
) -> dict[tuple[str, int], list[Sample]]:
    available = factories(loop)
    chosen = [name for name in names if name in available]
    samples: dict[tuple[str, int], list[Sample]] = {}
    for repeat in range(args.repeats):
        # Interleave transports (rotating the order) so slow drift hits all alike.
        order = chosen[repeat % len(chosen) :] + chosen[: repeat % len(chosen)]
        for concurrency in args.concurrency:
            for name in order:
                sample = await run_cell(
                    available[name], base, concurrency, args.warmup, args.duration, server_pid
                )
                samples.setdefault((name, concurrency), []).append(sample)
                print(
                    f"  {loop:7} {name:8} c={concurrency:<3} run {repeat + 1}: "
                    f"{sample.rate:8.0f} pairs/s  {sample.cpu_per_pair_us:6.0f} us CPU/pair "
                    f"(server {sample.server_cpu_per_pair_us:5.0f})"
                    + (f"  {sample.failures} failed" if sample.failures else ""),
                    flush=True,
                )
    return samples


def median_sample(runs: list[Sample]) -> Sample:
    return sorted(runs, key=lambda s: s.rate)[len(runs) // 2]


def report(loop: str, samples: dict[tuple[str, int], list[Sample]]) -> dict[tuple[str, int], float]:
    print(f"\n{loop}: median of {len(next(iter(samples.values())))} runs")
    print(
        f"{'transport':10} {'conc':>4} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU us/pair':>12} {'server us/pair':>15} {'failed':>7}"
    )
    rates: dict[tuple[str, int], float] = {}
    for (name, concurrency), runs in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rate = statistics.median(s.rate for s in runs)
        cpu = statistics.median(s.cpu_per_pair_us for s in runs)
        server_cpu = statistics.median(s.server_cpu_per_pair_us for s in runs)
        middle = median_sample(runs)
        latencies = list(middle.latencies)
        rates[(name, concurrency)] = rate
        print(
            f"{name:10} {concurrency:>4} {rate:>9.0f} {percentile(latencies, 0.5) * 1e3:>8.2f} "
            f"{percentile(latencies, 0.99) * 1e3:>8.2f} {cpu:>12.0f} {server_cpu:>15.0f} "
            f"{sum(s.failures for s in runs):>7}"
        )
    return rates


def cpu_of(samples: dict[tuple[str, int], list[Sample]], name: str, concurrency: int) -> float:
    return statistics.median(s.cpu_per_pair_us for s in samples[(name, concurrency)])


def verdicts(
    asyncio_samples: dict[tuple[str, int], list[Sample]] | None,
    trio_samples: dict[tuple[str, int], list[Sample]] | None,
) -> None:
    print("\ntargets (at 32 concurrency):")
    top = max(CONCURRENCY)
    if asyncio_samples and ("aiohttp", top) in asyncio_samples:
        h11 = statistics.median(s.rate for s in asyncio_samples[("h11", top)])
        aio = statistics.median(s.rate for s in asyncio_samples[("aiohttp", top)])
        h11_cpu, aio_cpu = (
            cpu_of(asyncio_samples, "h11", top),
            cpu_of(asyncio_samples, "aiohttp", top),
        )
        met = h11 >= 0.9 * aio and h11_cpu <= aio_cpu
        print(
            f"  asyncio: h11/aiohttp pairs/s = {h11 / aio:.2f} (>= 0.90), CPU/pair "
            f"{h11_cpu:.0f} vs {aio_cpu:.0f} us (<=) -> {'MET' if met else 'MISSED'}"
        )
    if trio_samples and ("httpx2", top) in trio_samples:
        rates = {
            name: statistics.median(s.rate for s in runs)
            for (name, conc), runs in trio_samples.items()
            if conc == top
        }
        fastest = max(rates, key=lambda name: rates[name])
        ratio = rates["h11"] / rates["httpx2"]
        met = fastest == "h11" and ratio >= 3
        print(
            f"  trio: fastest = {fastest}, h11/httpx2 pairs/s = {ratio:.2f} (>= 3) "
            f"-> {'MET' if met else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=0.25, help="seconds of warm-up per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell (median kept)")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--transports", default="h11,aiohttp,httpx2,httpx")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--quick", action="store_true", help="one short run per cell")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.quick:
        args.duration, args.warmup, args.repeats = 0.5, 0.1, 1
    names = args.transports.split(",")

    print(
        f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}",
        flush=True,
    )
    server, port = start_server()
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[tuple[str, int], list[Sample]]] = {}
    started = time.monotonic()
    try:
        for loop in args.loops.split(","):
            results[loop] = anyio.run(run_loop, loop, base, server.pid, names, args, backend=loop)
    finally:
        server.terminate()
        server.wait(10)
    for loop, samples in results.items():
        report(loop, samples)
    verdicts(results.get("asyncio"), results.get("trio"))
    print(f"\nwall time {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
