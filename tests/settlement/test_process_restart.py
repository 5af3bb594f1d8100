"""Real process death and restart against the embedded Cycles server.

The server (``cycleguard.server``, in-memory store) runs under uvicorn in a thread
of the test process, behind a small ASGI interceptor that records every commit and
can act at the moment one arrives. Workers are separate Python processes
(``_worker.py``) that build their client and settlement from configuration only,
talk real HTTP, and share nothing with the test but the journal directory.

- CR-DURABLE-001: the worker is SIGKILLed while its first commit is in flight (the
  server has applied it; the answer never reaches the worker). A second, fresh
  worker replays the journal: same key, one charge, record removed.
- CR-DURABLE-006: two worker processes replay the same record at once; their commits
  meet at a barrier in the server, both in flight together; one charge.

Each worker runs on the event loop under test (asyncio and trio).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
import anyio.to_thread
import attrs
import httpx
import pytest
import uvicorn

from cycleguard import Amount, CommitRequest
from cycleguard._core import _wire
from cycleguard._core._journal_format import (
    decode_record,
    event_fallback,
    fingerprint,
    new_record,
    standard_filename,
)
from cycleguard._journal import Journal
from cycleguard.server.app import CyclesServer
from cycleguard.server.stores.memory import memory_store
from cycleguard.transports.asgi import AsgiApp
from tests.settlement._fake import ACTION, SUBJECT

if TYPE_CHECKING:
    from collections.abc import Generator

    from cycleguard.transports.asgi import AsgiMessage, AsgiReceive, AsgiScope, AsgiSend

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL"),
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]

HOST = "127.0.0.1"
ADMIN_KEY = "restart-test-admin-key"
WORKER = Path(__file__).with_name("_worker.py")
ROOT = Path(__file__).parents[2]
ACTUAL = 1250


@attrs.define
class Arrival:
    """A commit as the server received it."""

    reservation_id: str
    key: str | None
    body: dict[str, object]


@attrs.define
class Interceptor:
    """ASGI middleware: records commits and runs hooks before and after the server acts."""

    app: AsgiApp
    arrivals: list[Arrival] = attrs.field(factory=lambda: list[Arrival]())
    before: Callable[[Arrival], Awaitable[None]] | None = None
    after: Callable[[Arrival], Awaitable[None]] | None = None

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        path = str(scope.get("path", ""))
        if scope.get("type") != "http" or not path.endswith("/commit"):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += cast("bytes", message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {
            bytes(k).decode().lower(): bytes(v).decode()
            for k, v in cast("list[tuple[bytes, bytes]]", scope.get("headers", []))
        }
        arrival = Arrival(
            reservation_id=path.split("/")[-2],
            key=headers.get("x-idempotency-key"),
            body=cast("dict[str, object]", json.loads(body)),
        )
        self.arrivals.append(arrival)
        if self.before is not None:
            await self.before(arrival)
        delivered = False

        async def replay() -> AsgiMessage:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        captured: list[AsgiMessage] = []

        async def capture(message: AsgiMessage) -> None:
            captured.append(message)

        await self.app(scope, replay, capture)
        if self.after is not None:
            await self.after(arrival)
        for message in captured:
            await send(message)


@contextmanager
def serve(app: AsgiApp) -> Generator[str]:
    """Serve ``app`` (lifespan on) in a thread until the block ends; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="critical", access_log=False, http="h11", ws="none",
        loop="asyncio", timeout_graceful_shutdown=5,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the server thread died while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@attrs.frozen
class Tenant:
    """A tenant on the live server with a budget, a key and one open reservation."""

    base_url: str
    tenant_id: str
    api_key: str
    reservation_id: str

    def spent(self) -> int:
        """What the ledger charged the tenant so far."""
        response = httpx.get(
            f"{self.base_url}/v1/balances",
            params={"tenant": self.tenant_id},
            headers={"X-Cycles-API-Key": self.api_key},
        )
        assert response.status_code == 200, response.text
        (balance,) = response.json()["balances"]
        return int(balance.get("spent", {"amount": 0})["amount"])

    def reservation_status(self) -> str:
        """The reservation's server-side status."""
        response = httpx.get(
            f"{self.base_url}/v1/reservations/{self.reservation_id}",
            headers={"X-Cycles-API-Key": self.api_key},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["status"])


def open_tenant(base_url: str) -> Tenant:
    """Create a tenant, its key, a budget and a reservation through the real APIs."""
    admin = {"X-Admin-API-Key": ADMIN_KEY}
    tenant_id = "t-" + uuid.uuid4().hex[:10]
    with httpx.Client(base_url=base_url, timeout=10) as http:
        made = http.post(
            "/v1/admin/tenants", json={"tenant_id": tenant_id, "name": "T"}, headers=admin
        )
        assert made.status_code == 201, made.text
        key = http.post(
            "/v1/admin/api-keys", json={"tenant_id": tenant_id, "name": "k"}, headers=admin
        )
        assert key.status_code == 201, key.text
        secret = str(key.json()["key_secret"])
        budget = http.post(
            "/v1/admin/budgets",
            json={
                "tenant_id": tenant_id,
                "scope": f"tenant:{tenant_id}",
                "unit": "TOKENS",
                "allocated": {"unit": "TOKENS", "amount": 100_000},
            },
            headers=admin,
        )
        assert budget.status_code == 201, budget.text
        reserved = http.post(
            "/v1/reservations",
            json={
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": tenant_id},
                "action": {"kind": ACTION.kind, "name": ACTION.name},
                "estimate": {"unit": "TOKENS", "amount": 5_000},
                "ttl_ms": 600_000,
            },
            headers={"X-Cycles-API-Key": secret},
        )
        assert reserved.status_code == 200, reserved.text
    return Tenant(base_url, tenant_id, secret, str(reserved.json()["reservation_id"]))


def worker_config(tenant: Tenant, journal: Path, backend: str, mode: str, key: str) -> str:
    return json.dumps(
        {
            "backend": backend,
            "mode": mode,
            "base_url": tenant.base_url,
            "api_key": tenant.api_key,
            "tenant": tenant.tenant_id,
            "journal_dir": str(journal),
            "reservation_id": tenant.reservation_id,
            "key": key,
            "actual": ACTUAL,
        }
    )


def spawn(config: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), config],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, str]:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return cast("dict[str, str]", json.loads(out.strip().splitlines()[-1])["outcomes"])


def record_file(journal: Path, tenant: Tenant) -> Path:
    identity = fingerprint(tenant.base_url, tenant.api_key, tenant.tenant_id)
    return journal / identity / standard_filename(tenant.reservation_id)


def server_app() -> AsgiApp:
    server = CyclesServer(open_store=memory_store, admin_key=ADMIN_KEY, sweep_interval=None)
    return cast("AsgiApp", server.app)


def test_killed_worker_commit_is_settled_once_after_restart(tmp_path: Path, backend: str) -> None:
    """CR-DURABLE-001 with real processes: journal before the first commit, SIGKILL with the
    commit applied but unanswered, a fresh process replays with the same key, the record goes
    and the ledger charged once."""
    journal = tmp_path / "journal"
    key = uuid.uuid4().hex
    victim: list[subprocess.Popen[str]] = []
    seen_on_disk: list[tuple[str, object]] = []
    interceptor = Interceptor(server_app())

    async def journal_first(arrival: Arrival) -> None:
        if len(interceptor.arrivals) == 1:
            path = record_file(journal, tenant)
            stored = decode_record(path.read_bytes()).unwrap()
            seen_on_disk.append((stored.mode, stored.commit_body))

    async def kill_in_flight(arrival: Arrival) -> None:
        if len(interceptor.arrivals) == 1:  # applied; the answer is not sent yet
            (process,) = victim
            os.kill(process.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(process.wait)

    interceptor.before = journal_first
    interceptor.after = kill_in_flight
    with serve(interceptor) as base_url:
        tenant = open_tenant(base_url)
        victim.append(spawn(worker_config(tenant, journal, backend, "commit", key)))
        victim[0].communicate(timeout=60)
        assert victim[0].returncode == -signal.SIGKILL

        # journal_write_precedes_first_settlement_request: exact body, commit mode.
        assert seen_on_disk == [("commit", interceptor.arrivals[0].body)]
        # unresolved_record_survives_restart; the server did apply the commit.
        assert record_file(journal, tenant).exists()
        assert tenant.reservation_status() == "COMMITTED"
        assert tenant.spent() == ACTUAL

        restarted = finish(spawn(worker_config(tenant, journal, backend, "replay", key)))

        assert restarted == {tenant.reservation_id: "Committed"}
        # [commit, commit_same_key_after_restart]
        assert [a.key for a in interceptor.arrivals] == [key, key]
        assert interceptor.arrivals[0].body == interceptor.arrivals[1].body
        assert tenant.spent() == ACTUAL  # settlement_occurs_at_most_once
        assert not record_file(journal, tenant).exists()  # successful_replay_removes_record


def test_two_worker_processes_replay_one_record_exactly_once(tmp_path: Path, backend: str) -> None:
    """CR-DURABLE-006 with real processes: both replays are in flight together (barrier of
    two in the server), carry the same key; the ledger charges once; no record remains."""
    journal = tmp_path / "journal"
    key = uuid.uuid4().hex
    interceptor = Interceptor(server_app())
    both = threading.Barrier(2, timeout=30)

    async def meet(arrival: Arrival) -> None:
        await anyio.to_thread.run_sync(both.wait)

    interceptor.before = meet
    with serve(interceptor) as base_url:
        tenant = open_tenant(base_url)
        request = CommitRequest(
            idempotency_key=key,
            actual=Amount.tokens(ACTUAL),
            metadata={"actual_source": "provider_usage"},
        )
        subject = attrs.evolve(SUBJECT, tenant=tenant.tenant_id, app=None)
        record = new_record(
            reservation_id=tenant.reservation_id,
            base_url=base_url,
            commit=request,
            event=event_fallback(tenant.reservation_id, request, subject, ACTION),
            now_ms=int(time.time() * 1000),
        )
        seeded = Journal(
            journal, base_url=base_url, api_key=tenant.api_key, tenant=tenant.tenant_id
        )
        assert seeded.write_sync(record)

        workers = [spawn(worker_config(tenant, journal, backend, "replay", key)) for _ in range(2)]
        results = [finish(worker) for worker in workers]

        # [concurrent_commit_same_key]
        assert [a.key for a in interceptor.arrivals] == [key, key]
        assert all(a.body == _wire.to_wire(request) for a in interceptor.arrivals)
        assert results == [{tenant.reservation_id: "Committed"}] * 2
        assert tenant.spent() == ACTUAL  # settlement_occurs_at_most_once
        assert tenant.reservation_status() == "COMMITTED"
        assert not record_file(journal, tenant).exists()  # terminal_record_is_removed
