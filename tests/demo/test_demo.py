"""``cycleguard demo`` end to end: the run, its figures, its errors, and Ctrl-C.

The demo starts the real embedded server (SQLite) and the fake OpenAI API on
loopback, provisions through the admin API and drives the real ``openai`` SDK,
so these tests run the whole product the way a newcomer first sees it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import anyio
import pytest

from cycleguard.__main__ import main
from cycleguard._core._state import LeaseState
from cycleguard.server.records import ReservationRecord
from cycleguard.server.stores.sqlite import sqlite_store
from cycleguard.testing import FakeOpenAI, HttpError, OpenAIUsage, Reply
from tests._sdk import SDK_STREAMS, collect_garbage

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

Backend = Literal["asyncio", "trio"]
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
ROW = re.compile(
    r"│\s*(\d+) │ (chat|stream)\s*│ (allow, capped|allow)\s*│\s*([\d,]+)(?: → ([\d,]+))? │"
    r"\s*([\d,]+) │\s*(≈?)([\d,]+) │\s*([\d,]+) │"
)
BALANCE = re.compile(r"│ (tenant:\S+)\s*│\s*([\d,]+) │\s*([\d,]+) │\s*([\d,]+) │\s*([\d,]+) │")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "100")


@BACKENDS
def test_the_agent_runs_until_its_budget_says_no(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every call is capped and settled; the ledger adds up; nothing stays reserved."""
    assert main(["demo", "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Offline: a local fake OpenAI API answers")
    assert "provisioned through its admin API" in out

    rows = [match.groups() for match in ROW.finditer(out)]
    assert len(rows) >= 10
    assert [_number(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert {row[1] for row in rows} == {"chat", "stream"}
    for _step, _call, decision, requested, capped, reserved, estimated, committed, _left in rows:
        assert (decision, _number(requested), capped) == ("allow, capped", 1_024, "256")
        assert estimated == ""  # the fake reports usage: nothing is a local estimate
        assert 0 < _number(committed) <= 256 + 100 < _number(reserved)
    remaining = [_number(row[8]) for row in rows]
    committed_total = sum(_number(row[7]) for row in rows)
    assert remaining[-1] == 4_000 - committed_total
    # The next estimate did not fit what was left: the refusal is the typed BudgetExceeded.
    assert remaining[-1] < _number(rows[-1][5])
    assert f"Step {len(rows) + 1} was refused" in out
    assert "BudgetExceeded" in out
    assert "step 4: rate limited; retrying in 0.3 s" in out

    balances = {row[1]: tuple(map(_number, row.groups()[1:])) for row in BALANCE.finditer(out)}
    assert balances["tenant:demo/agent:researcher"] == (4_000, 0, committed_total, remaining[-1])
    assert balances["tenant:demo"] == (40_000, 0, committed_total, 40_000 - committed_total)
    assert out.rstrip().endswith("Reservations still held: 0")


def test_a_used_data_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cycles.db").write_bytes(b"")
    assert main(["demo", "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"cycleguard demo: error: {tmp_path / 'cycles.db'} already exists: "
        "give the demo an empty --data-dir\n"
    )
    assert captured.out == ""


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--backend", "curio"], "invalid choice: 'curio'"),
        (["--tokens", "0"], "must be a whole number above 0"),
        (["--usd", "-1"], "must be more than 0"),
        (["--pace", "soon"], "not a number"),
    ],
)
def test_bad_flags_are_one_line(
    flags: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert err.count("\n") == 1


def _reservations_written(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM log WHERE kind = ?", (ReservationRecord.__name__,)
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(count)


async def _reservations(database: Path) -> list[ReservationRecord]:
    async with sqlite_store(database) as store:
        return await store.atomic(lambda tx: tx.scan(ReservationRecord, "demo"))


@BACKENDS
def test_ctrl_c_releases_the_call_in_flight(backend: Backend, tmp_path: Path) -> None:
    """SIGINT while a call holds its reservation: released, exit 130, nothing left held."""
    data = tmp_path / "data"
    output = tmp_path / "out.txt"
    command = [sys.executable, "-m", "cycleguard", "demo", "--backend", backend]
    command += ["--data-dir", str(data), "--fake-latency", "60", "--pace", "0"]
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "100"}
        )
        try:
            deadline = time.monotonic() + 60
            while _reservations_written(data / "cycles.db") == 0:
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "no reservation was made"
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=60)
        finally:
            process.kill()
    out = output.read_text()
    assert code == 130, out
    assert "Interrupted." in out
    assert out.rstrip().endswith("Reservations still held: 0")
    assert "Traceback" not in out

    (reservation,) = anyio.run(_reservations, data / "cycles.db", backend=backend)
    assert reservation.state is LeaseState.RELEASED
    assert not (data / "journal").exists() or not any((data / "journal").rglob("*.json"))


@pytest.fixture
def openai_api() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible endpoint for the demo's online mode (real SDK, real HTTP)."""
    usage = OpenAIUsage(prompt_tokens=60, completion_tokens=256)
    fake = FakeOpenAI(default=Reply(text="A budgeted answer.", usage=usage))
    with fake.serve() as url, pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-demo-test")
        env.setenv("OPENAI_BASE_URL", f"{url}/v1")
        yield fake


def test_with_an_api_key_the_budget_is_in_usd(
    openai_api: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Online mode prices usage with the offline price table and commits USD microcents."""
    assert main(["demo", "--usd", "0.002", "--model", "gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Calling the real OpenAI API (gpt-4o-mini); budgets are in USD.")
    assert "$0.002 USD" in out
    requests = [request for request in openai_api.requests if request.path.endswith("/completions")]
    assert requests
    assert all(request.json["max_completion_tokens"] == 256 for request in requests)
    assert all(request.header("authorization") == "Bearer sk-demo-test" for request in requests)
    # 60 input and 256 output tokens of gpt-4o-mini cost 16,260 microcents a call.
    agent = re.search(
        r"│ tenant:demo/agent:researcher │\s*\$([\d.]+) │\s*\$[\d.]+ │\s*\$([\d.]+) │", out
    )
    assert agent is not None
    assert agent[1] == "0.002"
    assert Decimal(agent[2]) == Decimal(len(requests) * 16_260) / 10**8
    assert "BudgetExceeded" in out
    assert "sk-demo-test" not in out


def test_a_provider_failure_ends_the_run_with_status_1(
    openai_api: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_api.push(HttpError(status=401))
    assert main(["demo"]) == 1
    out = capsys.readouterr().out
    assert "Step 1 failed: the provider answered HTTP 401 (AuthenticationError)" in out
    assert out.rstrip().endswith("Reservations still held: 0")
