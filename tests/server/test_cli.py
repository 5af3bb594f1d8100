"""``cycleguard serve``: flags, seed, errors, clean shutdown on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
import socket
from typing import TYPE_CHECKING

import httpx
import pytest

from cycleguard.__main__ import main
from tests.server._process import ServerProcess

if TYPE_CHECKING:
    from pathlib import Path

SEED = """
[[tenants]]
tenant_id = "acme"
name = "Acme"

[[api_keys]]
tenant_id = "acme"
name = "demo"

[[budgets]]
tenant_id = "acme"
scope = "tenant:acme"
unit = "TOKENS"
allocated = 1_000

[[policies]]
tenant_id = "acme"
name = "agents"
scope_pattern = "tenant:acme/agent:*"
caps = { max_tokens = 64 }
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "http"],
        ["serve", "--port", "70000"],
        ["serve", "--sweep-interval", "0"],
        ["serve", "--db", "x.db", "--memory"],
        ["serve", "--colour"],
        ["launch"],
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "error" in err


def test_an_unusable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a directory")
    assert main(["serve", "--port", "0", "--db", str(tmp_path / "file" / "c.db")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot open the database" in err


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        ("nonsense = [", "not valid TOML"),
        ("[[teams]]\nname = 'x'", "unknown sections"),
        ("[[tenants]]\ntenant_id = 'acme'", "tenants[0]"),
        (
            (
                "[[budgets]]\ntenant_id = 'ghost'\nscope = 'tenant:ghost'\n"
                "unit = 'TOKENS'\nallocated = 1"
            ),
            "TENANT_NOT_FOUND",
        ),
    ],
)
def test_a_bad_seed_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: str, expected: str
) -> None:
    path = tmp_path / "seed.toml"
    path.write_text(seed)
    assert main(["serve", "--memory", "--port", "0", "--seed", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err


def test_a_busy_port_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--memory", "--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_seeds_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    db = tmp_path / "cycles.db"
    server = ServerProcess(
        ["--db", str(db), "--seed", str(seed), "--sweep-interval", "0.1"],
        env={"CYCLES_ADMIN_API_KEY": "adm"},
    )
    try:
        base_url = server.wait_ready()
        secrets = [line.rsplit(": ", 1)[1] for line in server.stdout if "API key" in line]
        assert len(secrets) == 1
        headers = {"X-Cycles-API-Key": secrets[0]}
        body = {
            "idempotency_key": "k1",
            "subject": {"tenant": "acme", "agent": "bot"},
            "action": {"kind": "llm.completion", "name": "m"},
            "estimate": {"unit": "TOKENS", "amount": 100},
        }
        with httpx.Client(base_url=base_url, timeout=10) as http:
            reserved = http.post("/v1/reservations", json=body, headers=headers).json()
            assert reserved["decision"] == "ALLOW_WITH_CAPS"
            assert reserved["caps"] == {"max_tokens": 64}
            admin = http.get("/v1/admin/tenants/acme", headers={"X-Admin-API-Key": "adm"})
            assert admin.status_code == 200
    finally:
        code = server.stop(sig)
    assert code == 0, server.stderr
    assert not any("Traceback" in line for line in server.stderr), server.stderr
    again = ServerProcess(
        ["--db", str(db), "--seed", str(seed)], env={"CYCLES_ADMIN_API_KEY": "adm"}
    )
    try:
        base_url = again.wait_ready()
        assert not any("API key" in line for line in again.stdout), "a seed creates its keys once"
        with httpx.Client(base_url=base_url, timeout=10) as http:
            listed = http.get("/v1/reservations", headers=headers).json()
            assert [r["reservation_id"] for r in listed["reservations"]] == [
                reserved["reservation_id"]
            ]
    finally:
        assert again.stop() == 0
