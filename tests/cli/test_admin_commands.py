"""The admin and runtime commands of ``cycleguard``, end to end against the embedded server.

One server (SQLite store, real loopback HTTP) serves the module; each test
makes its own tenant. Commands run in process through ``main`` and are judged
by their exit status, stdout (JSON parsed, tables searched) and stderr.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
import pytest
from returns.pipeline import is_successful

from cycleguard import Action, Amount, ClientConfig, CyclesClient, Subject
from cycleguard.__main__ import main
from cycleguard.server.app import CyclesServer
from cycleguard.server.stores.sqlite import sqlite_store
from tests.server._live import serve_app

if TYPE_CHECKING:
    from collections.abc import Iterator

ADMIN_KEY = "cli-admin-key-s3cret"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded server on a SQLite file, over loopback HTTP."""
    path = tmp_path_factory.mktemp("cli") / "cycles.db"
    server = CyclesServer(
        open_store=partial(sqlite_store, path), admin_key=ADMIN_KEY, sweep_interval=0.05
    )
    with serve_app(server.app) as url:
        yield url


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or URL leaks in from the shell; tables are wide enough not to wrap."""
    for name in ("CYCLES_BASE_URL", "CYCLES_ADMIN_API_KEY", "CYCLES_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")


class Cli:
    """Runs ``cycleguard`` in process against the module's server."""

    def __init__(self, base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.base_url = base_url
        self._capsys = capsys
        self.seen: list[str] = []

    def raw(self, *argv: str) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of exactly ``argv``."""
        self._capsys.readouterr()
        code = main(list(argv))
        out, err = self._capsys.readouterr()
        self.seen += (out, err)
        return code, out, err

    def admin(self, *argv: str, key: str = ADMIN_KEY) -> tuple[int, str, str]:
        """``argv`` with this server's URL and the admin key."""
        return self.raw(*argv, "--base-url", self.base_url, "--admin-key", key)

    def tenant_key(self, api_key: str, *argv: str) -> tuple[int, str, str]:
        """``argv`` with this server's URL and a tenant's API key."""
        return self.raw(*argv, "--base-url", self.base_url, "--api-key", api_key)

    def admin_json(self, *argv: str) -> dict[str, object]:
        """The parsed ``--json`` answer of a command that must succeed."""
        code, out, err = self.admin(*argv, "--json")
        assert (code, err) == (0, ""), err
        return as_dict(json.loads(out))

    def api_json(self, api_key: str, *argv: str) -> dict[str, object]:
        """The parsed ``--json`` answer of a runtime command that must succeed."""
        code, out, err = self.tenant_key(api_key, *argv, "--json")
        assert (code, err) == (0, ""), err
        return as_dict(json.loads(out))


def as_dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return cast("dict[str, object]", value)


def as_list(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list)
    return [as_dict(item) for item in cast("list[object]", value)]


def one_error_line(err: str) -> str:
    """The single stderr line of a failed command, which is never a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cycleguard: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cli(base_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(base_url, capsys)


def new_tenant_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def provision(cli: Cli, budget: int = 10_000) -> tuple[str, str]:
    """A tenant with a TOKENS budget at its root and a default key: (tenant id, secret)."""
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Acme")
    key = cli.admin_json("key", "create", "--tenant", tenant, "--name", "bot")
    cli.admin_json(
        "budget",
        "create",
        "--scope",
        f"tenant:{tenant}",
        "--unit",
        "TOKENS",
        "--allocated",
        str(budget),
    )
    return tenant, str(key["key_secret"])


def reserve(base_url: str, api_key: str, tenant: str, tokens: int) -> str:
    """A live reservation made with the client; its id."""

    async def run() -> str:
        config = ClientConfig(base_url=base_url, api_key=api_key)
        async with CyclesClient(config) as client:
            reserved = await client.create_reservation(
                subject=Subject(tenant=tenant, agent="bot"),
                action=Action("llm.completion", "test-model"),
                estimate=Amount.tokens(tokens),
            )
        assert is_successful(reserved), reserved
        return reserved.unwrap().reservation_id

    return anyio.run(run)


# Tenants -----------------------------------------------------------------------------


def test_tenant_create_show_list_and_close(cli: Cli) -> None:
    tenant = new_tenant_id()
    code, out, err = cli.admin("tenant", "create", "--id", tenant, "--name", "Acme Corp")
    assert (code, err) == (0, "")
    assert tenant in out
    assert "Acme Corp" in out
    assert "ACTIVE" in out

    shown = cli.admin_json("tenant", "show", tenant)
    assert (shown["tenant_id"], shown["name"], shown["status"]) == (tenant, "Acme Corp", "ACTIVE")

    listed = cli.admin_json("tenant", "list", "--status", "ACTIVE", "--limit", "100")
    assert tenant in [row["tenant_id"] for row in as_list(listed["tenants"])]
    code, out, _ = cli.admin("tenant", "list")
    assert code == 0
    assert tenant in out
    assert "Acme Corp" in out

    closed = cli.admin_json("tenant", "close", tenant)
    assert closed["status"] == "CLOSED"
    assert "closed_at" in closed
    code, out, _ = cli.admin("tenant", "show", tenant)
    assert code == 0
    assert "CLOSED" in out


def test_tenant_list_pages_with_a_cursor(cli: Cli) -> None:
    for _ in range(2):
        cli.admin_json("tenant", "create", "--id", new_tenant_id(), "--name", "Paged")
    first = cli.admin_json("tenant", "list", "--limit", "1")
    assert first["has_more"] is True
    assert len(as_list(first["tenants"])) == 1
    cursor = str(first["next_cursor"])
    code, out, _ = cli.admin("tenant", "list", "--limit", "1")
    assert code == 0
    assert f"--cursor {cursor}" in out
    second = cli.admin_json("tenant", "list", "--limit", "1", "--cursor", cursor)
    assert as_list(second["tenants"]) != as_list(first["tenants"])


# API keys ----------------------------------------------------------------------------


def test_key_create_prints_the_secret_once_and_never_again(cli: Cli) -> None:
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Keys")
    code, out, err = cli.admin(
        "key",
        "create",
        "--tenant",
        tenant,
        "--name",
        "bot",
        "--permission",
        "balances:read",
        "--permission",
        "reservations:list",
    )
    assert (code, err) == (0, "")
    assert "shown only this once" in out
    secret = next(line.split()[-2] for line in out.splitlines() if "key_secret" in line.split())
    assert secret.startswith("cyc_")
    key_id = next(line.split()[-2] for line in out.splitlines() if "key_id" in line.split())

    listed = cli.admin_json("key", "list", "--tenant", tenant)
    (row,) = as_list(listed["keys"])
    assert (row["key_id"], row["name"], row["status"]) == (key_id, "bot", "ACTIVE")
    assert row["permissions"] == ["balances:read", "reservations:list"]
    code, out, _ = cli.admin("key", "list", "--tenant", tenant, "--status", "ACTIVE")
    assert code == 0
    assert key_id in out
    assert secret not in out

    revoked = cli.admin_json("key", "revoke", key_id, "--reason", "rotated")
    assert (revoked["status"], revoked["revoked_reason"]) == ("REVOKED", "rotated")
    code, _, err = cli.admin("key", "revoke", key_id)
    assert code == 1
    assert "KEY_REVOKED (HTTP 409)" in one_error_line(err)

    code, _, err = cli.tenant_key(secret, "balances", "--tenant", tenant)
    assert code == 1
    assert "the server refused the API key" in one_error_line(err)
    # The secret was printed by ``key create`` and nowhere else.
    assert sum(secret in text for text in cli.seen) == 1


def test_key_create_json_carries_the_secret(cli: Cli) -> None:
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Keys")
    created = cli.admin_json("key", "create", "--tenant", tenant, "--name", "ci")
    assert created["tenant_id"] == tenant
    assert str(created["key_secret"]).startswith(str(created["key_prefix"]))


# Budgets -----------------------------------------------------------------------------


def test_budget_create_list_show_fund_freeze_unfreeze(cli: Cli) -> None:
    tenant = new_tenant_id()
    scope = f"tenant:{tenant}"
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Budgets")
    address = ("--scope", scope, "--unit", "TOKENS")
    created = cli.admin_json(
        "budget",
        "create",
        *address,
        "--allocated",
        "100000",
        "--overdraft-limit",
        "500",
        "--overage-policy",
        "ALLOW_WITH_OVERDRAFT",
    )
    assert created["allocated"] == {"unit": "TOKENS", "amount": 100_000}
    assert created["overdraft_limit"] == {"unit": "TOKENS", "amount": 500}
    assert created["commit_overage_policy"] == "ALLOW_WITH_OVERDRAFT"
    assert created["tenant_id"] == tenant

    listed = cli.admin_json("budget", "list", "--tenant", tenant, "--unit", "TOKENS")
    assert [row["scope"] for row in as_list(listed["ledgers"])] == [scope]
    code, out, _ = cli.admin("budget", "list", "--tenant", tenant)
    assert code == 0
    assert scope in out
    assert re.search(r"│ TOKENS\s*│ 100,000\s*│ 100,000\s*│ 0\s*│ 0\s*│ ACTIVE", out), out

    code, out, _ = cli.admin("budget", "show", *address)
    assert code == 0
    assert "100000 TOKENS" in out
    assert "ACTIVE" in out

    funded = cli.admin_json("budget", "fund", *address, "--operation", "CREDIT", "--amount", "2500")
    assert funded["new_allocated"] == {"unit": "TOKENS", "amount": 102_500}
    code, out, _ = cli.admin(
        "budget", "fund", *address, "--operation", "DEBIT", "--amount", "500", "--reason", "fix"
    )
    assert code == 0
    assert "102500 TOKENS" in out
    assert "102000 TOKENS" in out
    assert cli.admin_json("budget", "show", *address)["remaining"] == {
        "unit": "TOKENS",
        "amount": 102_000,
    }

    assert cli.admin_json("budget", "freeze", *address, "--reason", "audit")["status"] == "FROZEN"
    code, _, err = cli.admin("budget", "freeze", *address)
    assert code == 1
    assert "BUDGET_FROZEN (HTTP 409)" in one_error_line(err)
    code, out, _ = cli.admin("budget", "unfreeze", *address)
    assert code == 0
    assert "ACTIVE" in out


def test_budget_commands_take_a_tenant_api_key(cli: Cli) -> None:
    tenant, secret = provision(cli)
    scope = f"tenant:{tenant}/app:chat"
    created = cli.api_json(
        secret, "budget", "create", "--scope", scope, "--unit", "CREDITS", "--allocated", "7"
    )
    assert (created["tenant_id"], created["unit"]) == (tenant, "CREDITS")
    listed = cli.api_json(secret, "budget", "list")
    assert {row["scope"] for row in as_list(listed["ledgers"])} == {f"tenant:{tenant}", scope}
    shown = cli.api_json(secret, "budget", "show", "--scope", scope, "--unit", "CREDITS")
    assert shown["allocated"] == {"unit": "CREDITS", "amount": 7}


# Policies ----------------------------------------------------------------------------


def test_policy_create_and_list(cli: Cli) -> None:
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Policies")
    created = cli.admin_json(
        "policy",
        "create",
        "--name",
        "agents",
        "--scope-pattern",
        f"tenant:{tenant}/agent:*",
        "--max-tokens",
        "256",
        "--priority",
        "5",
        "--deny-tool",
        "shell",
    )
    assert created["caps"] == {"max_tokens": 256, "tool_denylist": ["shell"]}
    assert created["priority"] == 5
    listed = cli.admin_json("policy", "list", "--tenant", tenant)
    assert [row["policy_id"] for row in as_list(listed["policies"])] == [created["policy_id"]]
    code, out, _ = cli.admin("policy", "list", "--tenant", tenant)
    assert code == 0
    assert "agents" in out
    assert "max_tokens=256, tool_denylist=[shell]" in out
    code, _, err = cli.admin(
        "policy", "create", "--name", "agents", "--scope-pattern", f"tenant:{tenant}/agent:*"
    )
    assert code == 1
    assert "DUPLICATE_RESOURCE (HTTP 409)" in one_error_line(err)


# The runtime plane -------------------------------------------------------------------


def test_balances_show_the_tenants_budgets(cli: Cli) -> None:
    tenant, secret = provision(cli, budget=4_000)
    reserve(cli.base_url, secret, tenant, 1_000)
    answer = cli.api_json(secret, "balances", "--tenant", tenant)
    (balance,) = as_list(answer["balances"])
    assert balance["scope"] == f"tenant:{tenant}"
    assert balance["remaining"] == {"unit": "TOKENS", "amount": 3_000}
    assert balance["reserved"] == {"unit": "TOKENS", "amount": 1_000}
    code, out, _ = cli.tenant_key(secret, "balances", "--tenant", tenant, "--include-children")
    assert code == 0
    assert re.search(r"│ TOKENS\s*│ 4,000\s*│ 3,000\s*│ 1,000\s*│ 0\s*│ 0\s*│", out), out


def test_reservations_list_show_release(cli: Cli) -> None:
    tenant, secret = provision(cli)
    reservation = reserve(cli.base_url, secret, tenant, 1_200)

    listed = cli.api_json(secret, "reservations", "list", "--status", "ACTIVE")
    (row,) = as_list(listed["reservations"])
    assert (row["reservation_id"], row["reserved"]) == (
        reservation,
        {"unit": "TOKENS", "amount": 1_200},
    )
    code, out, _ = cli.tenant_key(secret, "reservations", "list", "--agent", "bot")
    assert code == 0
    assert reservation in out
    assert re.search(r"│ TOKENS\s*│ 1,200\s*│", out), out

    shown = cli.api_json(secret, "reservations", "show", reservation)
    assert shown["status"] == "ACTIVE"
    assert shown["subject"] == {"tenant": tenant, "agent": "bot"}
    code, out, _ = cli.tenant_key(secret, "reservations", "show", reservation)
    assert code == 0
    assert f"tenant={tenant}, agent=bot" in out

    code, out, err = cli.tenant_key(
        secret, "reservations", "release", reservation, "--reason", "done"
    )
    assert (code, err) == (0, "")
    assert "RELEASED" in out
    assert "1200 TOKENS" in out
    assert cli.api_json(secret, "reservations", "show", reservation)["status"] == "RELEASED"
    code, _, err = cli.tenant_key(secret, "reservations", "release", reservation)
    assert code == 1
    assert "RESERVATION_FINALIZED (HTTP 409)" in one_error_line(err)


def test_release_json_is_the_answer(cli: Cli) -> None:
    tenant, secret = provision(cli)
    reservation = reserve(cli.base_url, secret, tenant, 300)
    released = cli.api_json(secret, "reservations", "release", reservation)
    assert released["status"] == "RELEASED"
    assert released["released"] == {"unit": "TOKENS", "amount": 300}


# Failures ----------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "argv",
    [
        ["tenant", "list", "--admin-key", "k"],
        ["key", "create", "--tenant", "acme", "--name", "n", "--admin-key", "k"],
        ["budget", "show", "--scope", "tenant:acme", "--unit", "TOKENS", "--api-key", "k"],
        ["policy", "list", "--admin-key", "k"],
        ["balances", "--tenant", "acme", "--api-key", "k"],
        ["reservations", "list", "--api-key", "k"],
    ],
)
def test_an_unreachable_server_is_one_line_and_exit_1(cli: Cli, argv: list[str]) -> None:
    url = closed_port_url()
    code, out, err = cli.raw(*argv, "--base-url", url)
    assert (code, out) == (1, "")
    assert one_error_line(err).startswith(f"cycleguard: error: cannot reach {url}: ")


def test_a_wrong_admin_key_is_refused_without_showing_it(cli: Cli) -> None:
    wrong = "not-the-admin-key-x9"
    for argv in (("tenant", "list"), ("budget", "list"), ("key", "list")):
        code, out, err = cli.admin(*argv, key=wrong)
        assert (code, out) == (1, "")
        assert "the server refused the admin key" in one_error_line(err)
        assert wrong not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["balances", "--tenant", "acme"],
        ["reservations", "list"],
        ["reservations", "show", "res-unknown"],
        ["budget", "list"],
    ],
)
def test_a_wrong_api_key_is_refused_without_showing_it(cli: Cli, argv: list[str]) -> None:
    wrong = "cyc_live_wrongwrongwrong"
    code, out, err = cli.tenant_key(wrong, *argv)
    assert (code, out) == (1, "")
    assert "the server refused the API key" in one_error_line(err)
    assert wrong not in err


def test_a_missing_key_is_named(cli: Cli) -> None:
    code, _, err = cli.raw("tenant", "list", "--base-url", cli.base_url)
    assert code == 1
    assert "no admin key" in one_error_line(err)
    code, _, err = cli.raw("balances", "--tenant", "acme", "--base-url", cli.base_url)
    assert code == 1
    assert "no API key" in one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["tenant", "create", "--id", "Not An Id", "--name", "x"], "tenant_id"),
        (
            ["key", "create", "--tenant", "acme", "--name", "n", "--permission", "root"],
            "permissions[0]",
        ),
        (["policy", "create", "--name", "", "--scope-pattern", "tenant:acme"], "name"),
    ],
)
def test_a_client_side_validation_failure_names_the_field(
    cli: Cli, argv: list[str], field: str
) -> None:
    code, _, err = cli.admin(*argv)
    assert code == 1
    assert f"cycleguard: error: invalid request: {field}: " in one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["balances"], "subject"),
        (["reservations", "list", "--limit", "0"], "limit"),
        (["reservations", "show", "r" * 129], "reservation_id"),
    ],
)
def test_a_runtime_validation_failure_names_the_field(
    cli: Cli, argv: list[str], field: str
) -> None:
    code, _, err = cli.tenant_key("cyc_live_unused", *argv)
    assert code == 1
    assert f"cycleguard: error: invalid request: {field}: " in one_error_line(err)


def test_a_server_side_validation_failure_names_the_field(cli: Cli) -> None:
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Rules")
    code, _, err = cli.admin(
        "budget",
        "create",
        "--scope",
        "tenant:elsewhere",
        "--unit",
        "TOKENS",
        "--allocated",
        "1",
        "--tenant",
        tenant,
    )
    assert code == 1
    assert "the server rejected the request: scope must be" in one_error_line(err)
    code, _, err = cli.admin(
        "policy", "create", "--name", "p", "--scope-pattern", "nonsense", "--tenant", tenant
    )
    assert code == 1
    assert "rejected the request: scope_pattern must be" in one_error_line(err)
    code, _, err = cli.admin("tenant", "list", "--limit", "500")
    assert code == 1
    assert "rejected the request: limit must be" in one_error_line(err)
    code, _, err = cli.admin("policy", "list")
    assert code == 1
    assert "tenant_id is required" in one_error_line(err)


def test_not_found_is_one_line(cli: Cli) -> None:
    code, _, err = cli.admin("tenant", "show", "no-such-tenant")
    assert code == 1
    assert "not found: Tenant not found: no-such-tenant" in one_error_line(err)
    code, _, err = cli.admin(
        "budget", "show", "--scope", "tenant:no-such-tenant", "--unit", "TOKENS"
    )
    assert code == 1
    assert one_error_line(err).startswith("cycleguard: error: not found: ")
    code, _, err = cli.admin("key", "revoke", "key_0000")
    assert code == 1
    assert "not found" in one_error_line(err)
    _, secret = provision(cli)
    code, _, err = cli.tenant_key(secret, "reservations", "show", "res-does-not-exist")
    assert code == 1
    assert one_error_line(err).startswith("cycleguard: error: not found: ")


def test_a_malformed_base_url_is_one_line(cli: Cli) -> None:
    code, _, err = cli.raw("tenant", "list", "--base-url", "localhost:7878", "--admin-key", "k")
    assert code == 1
    assert "URL" in one_error_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["tenant"],
        ["tenant", "rename"],
        ["budget", "create", "--scope", "tenant:a", "--unit", "GOLD", "--allocated", "1"],
        ["budget", "create", "--scope", "tenant:a", "--unit", "TOKENS", "--allocated", "-5"],
        ["budget", "fund", "--scope", "tenant:a", "--unit", "TOKENS", "--amount", "1"],
        ["key", "create", "--tenant", "acme"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "error" in err


def test_urls_and_keys_come_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, secret = provision(cli)
    monkeypatch.setenv("CYCLES_BASE_URL", cli.base_url)
    monkeypatch.setenv("CYCLES_ADMIN_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("CYCLES_API_KEY", secret)
    code, out, _ = cli.raw("tenant", "show", tenant, "--json")
    assert code == 0
    assert json.loads(out)["tenant_id"] == tenant
    code, out, _ = cli.raw("balances", "--tenant", tenant, "--json")
    assert code == 0
    assert json.loads(out)["balances"][0]["scope"] == f"tenant:{tenant}"


def test_no_key_appears_in_any_output(cli: Cli) -> None:
    tenant, secret = provision(cli)
    reservation = reserve(cli.base_url, secret, tenant, 10)
    cli.admin("tenant", "show", tenant)
    cli.admin("key", "list", "--tenant", tenant)
    cli.admin("budget", "list", "--tenant", tenant, "--json")
    cli.tenant_key(secret, "balances", "--tenant", tenant)
    cli.tenant_key(secret, "reservations", "show", reservation, "--json")
    cli.tenant_key(secret, "reservations", "release", reservation)
    cli.tenant_key(secret, "reservations", "release", reservation)
    cli.admin("tenant", "close", tenant)
    cli.tenant_key(secret, "balances", "--tenant", tenant)
    assert not any(ADMIN_KEY in text for text in cli.seen)
    # Once, from ``key create`` in provision().
    assert sum(secret in text for text in cli.seen) == 1


def test_the_entry_point_runs_as_a_subprocess(cli: Cli) -> None:
    tenant = new_tenant_id()
    cli.admin_json("tenant", "create", "--id", tenant, "--name", "Process")
    script = Path(sys.executable).with_name("cycleguard")
    run = subprocess.run(
        [str(script), "tenant", "list", "--base-url", cli.base_url, "--json"],
        env={"CYCLES_ADMIN_API_KEY": ADMIN_KEY, "PATH": str(script.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert tenant in [row["tenant_id"] for row in json.loads(run.stdout)["tenants"]]
    failed = subprocess.run(
        [str(script), "tenant", "list", "--base-url", closed_port_url()],
        env={"CYCLES_ADMIN_API_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert one_error_line(failed.stderr).startswith("cycleguard: error: cannot reach")
