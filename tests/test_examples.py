"""Every file in ``examples/`` runs, offline, and says what it should.

Each example is run in process on asyncio and trio (its ``main()``), and once
as a script, the way a reader runs it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from tests._sdk import SDK_STREAMS, collect_garbage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

EXAMPLES = Path(__file__).parents[1] / "examples"

EXPECTED: dict[str, tuple[str, ...]] = {
    "basic_guarded_call": (
        "charged 45 TOKENS (usage: 31 in, 14 out)",
        "cycleguard reserves before each call and commits what the call used.",
        "remaining 9955 of 10000 tokens",
    ),
    "caps": (
        "decision: ALLOW_WITH_CAPS",
        "max_completion_tokens sent: 256 (asked for 2000)",
        "tools sent: ['search']",
        "cooldown: 1000 ms, steps left: 2",
        "refused before the call: caps.max_tokens is 0: no output may be generated",
    ),
    "streaming": (
        "committed 33 tokens from usage",
        "committed 17 tokens from local_count (estimated)",
        "stream failed: ProviderConnectionFailed",
        "committed 18 tokens from local_count (estimated) (partial)",
        "spent in all: 68 tokens",
    ),
    "error_handling": (
        "rate limited (RateLimitError); retrying in 0.02s",
        "gpt-4o is failing (503); falling back to gpt-4o-mini",
        "Reserve, then commit.",
        "(budget exhausted: here is a cached answer instead)",
    ),
    "usd_budget": (
        "gpt-4o-mini: charged $0.000240",
        "gpt-4o: charged $0.004000",
        "left of $1.00: $0.995760",
    ),
    "anthropic_messages": (
        "charged 147 tokens (25 + 10 written + 100 read + 12 out)",
        "stream committed 147 tokens",
        "stream failed (overloaded_error); charged 138 tokens for what arrived (local_count)",
    ),
    "responses_api": (
        "charged 70 tokens (12 of them reasoning)",
        "stream committed 70 tokens",
    ),
}


def test_every_example_is_covered() -> None:
    """A new example must be added here (and so run by these tests)."""
    found = {path.stem for path in EXAMPLES.glob("*.py") if not path.stem.startswith("_")}
    assert found == set(EXPECTED)


def example_main(name: str) -> Callable[[], Awaitable[None]]:
    spec = importlib.util.spec_from_file_location(
        f"cycleguard_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast("Callable[[], Awaitable[None]]", module.main)


@pytest.mark.anyio
@SDK_STREAMS
@pytest.mark.usefixtures(collect_garbage.__name__)
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_runs_in_process(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``main()`` completes on this event loop and prints what the example promises."""
    monkeypatch.setattr(sys, "path", [str(EXAMPLES), *sys.path])  # for ``_offline``
    await example_main(name)()
    printed = capsys.readouterr().out
    for line in EXPECTED[name]:
        assert line in printed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_as_a_script(name: str) -> None:
    """``python examples/<name>.py`` exits cleanly, with nothing on stderr."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for line in EXPECTED[name]:
        assert line in done.stdout
