"""``cycleguard demo``: its flags, and the one-line errors and exit codes around a run.

The run itself (:mod:`._session`) is imported only when the command runs, so
other commands do not pay for importing the OpenAI SDK.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cycleguard.__main__ import Commands

__all__ = ("add_demo_command", "run_demo")


def _positive_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0 and 60, got {text}")
    return value


def add_demo_command(commands: Commands) -> None:
    """Register ``demo`` on the ``cycleguard`` command line."""
    parser = commands.add_parser(
        "demo",
        help="watch a budget stop a runaway agent (offline by default)",
        description=(
            "Start the embedded Cycles server, provision a tenant, budgets and a caps policy "
            "through its admin API, and run an agent of guarded OpenAI calls until its budget "
            "runs out. Without OPENAI_API_KEY (or with --offline) the calls go to a local fake "
            "OpenAI endpoint."
        ),
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop"
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="OpenAI model (default gpt-4o-mini)")
    parser.add_argument(
        "--usd",
        type=_positive_decimal,
        default=Decimal("0.002"),
        help="the agent's budget in USD with the real API (default 0.002)",
    )
    parser.add_argument(
        "--tokens",
        type=_positive_int,
        default=4_000,
        help="the agent's budget in tokens offline (default 4000)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="use the local fake even if OPENAI_API_KEY is set"
    )
    parser.add_argument(
        "--pace",
        type=_seconds,
        default=None,
        help="seconds between calls (default 0.3 on a terminal, 0 otherwise)",
    )
    parser.add_argument(
        "--fake-latency",
        type=_seconds,
        default=0.0,
        help="offline: seconds the fake takes to answer, to watch calls in flight (default 0)",
    )
    parser.add_argument(
        "--max-steps", type=_positive_int, default=100, help="stop after this many calls"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the SQLite database and the journal here (default: a temporary directory)",
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: 0 when the agent ran to the end of its budget, 130 on Ctrl-C."""
    from cycleguard._demo._session import DemoError, run

    try:
        return run(
            backend=args.backend,
            model=args.model,
            usd=args.usd,
            tokens=args.tokens,
            offline=args.offline,
            pace=args.pace,
            fake_latency=args.fake_latency,
            max_steps=args.max_steps,
            data_dir=args.data_dir,
        )
    except DemoError as failure:
        print(f"cycleguard demo: error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Only while the stage is set up or torn down; during the run Ctrl-C cancels it.
        print("cycleguard demo: interrupted", file=sys.stderr)
        return 130
