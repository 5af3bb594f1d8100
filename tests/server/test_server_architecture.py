"""The server's rules stay pure: its rule and operation modules import no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).parents[2] / "src" / "cycleguard" / "server"
PURE = ("ledger", "policies", "records", "queries", "runtime", "admin", "admin_models", "auth")
IO = {"anyio", "trio", "asyncio", "starlette", "uvicorn", "sqlite3", "httpx", "aiohttp", "socket"}


def _imports(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("name", PURE)
def test_rule_modules_do_no_io(name: str) -> None:
    imported = _imports(SERVER / f"{name}.py")
    assert not {module.split(".")[0] for module in imported} & IO
    edges = {"cycleguard.server.app", "cycleguard.server.http", "cycleguard.server.cli"}
    assert not imported & edges, f"{name} reaches into the HTTP edge"
    sqlite = "cycleguard.server.stores.sqlite"
    assert sqlite not in imported, f"{name} depends on a concrete store"
