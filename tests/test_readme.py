"""The README's promises: its two commands, and its example running as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio

from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply
from tests._embedded import Embedded, provision

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_two_commands_are_the_demo_and_the_tests() -> None:
    text = README.read_text()
    assert "$ uv run cycleguard demo" in text
    assert "$ uv run pytest" in text


def test_the_guarded_openai_example_runs(embedded: Embedded, tmp_path: Path) -> None:
    """The example reserves, calls the (fake) API through the real SDK, commits the usage."""
    tenant = anyio.run(provision, embedded, {"": 10_000})
    fake = FakeOpenAI(default=None)
    fake.push(Reply(text="Hello!", usage=OpenAIUsage(prompt_tokens=8, completion_tokens=3)))
    (example,) = python_blocks()
    with fake.serve() as openai_url:
        env = {
            **os.environ,
            "CYCLES_BASE_URL": embedded.base_url,
            "CYCLES_API_KEY": tenant.api_key,
            "CYCLES_TENANT": tenant.tenant_id,
            "CYCLES_JOURNAL_DIR": str(tmp_path),
            "OPENAI_API_KEY": "sk-readme",
            "OPENAI_BASE_URL": f"{openai_url}/v1",
        }
        run = subprocess.run(
            [sys.executable, "-c", example],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "Hello! 11\n"
    (request,) = fake.requests
    assert request.header("authorization") == "Bearer sk-readme"


def test_the_example_says_when_the_budget_is_out(embedded: Embedded, tmp_path: Path) -> None:
    tenant = anyio.run(provision, embedded, {"": 10})
    (example,) = python_blocks()
    env = {
        **os.environ,
        "CYCLES_BASE_URL": embedded.base_url,
        "CYCLES_API_KEY": tenant.api_key,
        "CYCLES_TENANT": tenant.tenant_id,
        "CYCLES_JOURNAL_DIR": str(tmp_path),
        "OPENAI_API_KEY": "sk-readme",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never reached: the budget says no first
    }
    run = subprocess.run(
        [sys.executable, "-c", example],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("out of budget: ")
