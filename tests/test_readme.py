"""The README's example runs as written against the embedded server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from tests._embedded import Embedded, provision

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_guarded_call_example_runs(embedded: Embedded, tmp_path: Path) -> None:
    """The first example reserves, commits and prints the model's answer."""
    tenant = anyio.run(provision, embedded, {"": 10_000})
    env = {
        **os.environ,
        "CYCLES_BASE_URL": embedded.base_url,
        "CYCLES_API_KEY": tenant.api_key,
        "CYCLES_TENANT": tenant.tenant_id,
        "CYCLES_JOURNAL_DIR": str(tmp_path),
    }
    example = python_blocks()[0]
    run = subprocess.run(
        [sys.executable, "-c", example],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "answer in at most 800 tokens\n"
