"""A `cycleguard serve` process on a free loopback port, provisioned for benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator

ADMIN_KEY = "bench-admin-key"
TENANT = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def cycles_server(*, store: str = "--memory") -> Iterator[tuple[str, str]]:
    """Start the embedded server in its own process; yield (base_url, tenant api key)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cycleguard",
            "serve",
            store,
            "--port",
            str(port),
            "--admin-key",
            ADMIN_KEY,
            "--sweep-interval",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {process.stderr}") from None
                time.sleep(0.05)
        yield base_url, provision(base_url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def provision(base_url: str) -> str:
    """A tenant with a huge token budget; returns its API key secret."""
    headers = {"X-Admin-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as http:
        http.post(
            "/v1/admin/tenants", json={"tenant_id": TENANT, "name": "Bench"}
        ).raise_for_status()
        key = http.post("/v1/admin/api-keys", json={"tenant_id": TENANT, "name": "bench"})
        key.raise_for_status()
        budget = {
            "tenant_id": TENANT,
            "scope": f"tenant:{TENANT}",
            "unit": "TOKENS",
            "allocated": {"unit": "TOKENS", "amount": 10**15},
        }
        http.post("/v1/admin/budgets", json=budget).raise_for_status()
        return str(key.json()["key_secret"])
