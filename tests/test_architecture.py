"""The pure core stays pure: no module under ``cycleguard._core`` imports an I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).parents[1] / "src" / "cycleguard" / "_core"
ALLOWED_THIRD_PARTY = {"attrs", "cattrs", "returns"}
FORBIDDEN = {
    "anyio",
    "trio",
    "asyncio",
    "httpx",
    "httpx2",
    "aiohttp",
    "h11",
    "openai",
    "anthropic",
    "sniffio",
    "socket",
    "ssl",
    "starlette",
    "sqlite3",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    """Core modules import only the standard library, attrs, cattrs, returns and the core."""
    roots = imported_roots(path)
    assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
    third_party = {root for root in roots if root not in {"cycleguard", "__future__"}}
    non_stdlib = {root for root in third_party if root not in __import__("sys").stdlib_module_names}
    assert non_stdlib <= ALLOWED_THIRD_PARTY, f"{path.name} imports {non_stdlib}"


def test_core_imports_only_the_core() -> None:
    """Inside cycleguard, the core depends on nothing but itself."""
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("cycleguard")
            ):
                assert node.module.startswith("cycleguard._core"), f"{path.name}: {node.module}"
