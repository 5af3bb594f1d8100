"""The ``cycleguard`` command line.

Each subcommand lives with its feature and registers itself here through an
``add_*_command(subparsers)`` function that sets ``handler`` (a function from
the parsed arguments to an exit code). ``serve`` is the first; ``demo`` and
admin commands plug in the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("Commands", "build_parser", "main")


class Commands(Protocol):
    """Where a subcommand registers its parser (argparse's subparsers action)."""

    def add_parser(self, name: str, *, help: str, description: str) -> argparse.ArgumentParser:  # noqa: A002
        """Add and return the parser of subcommand ``name``."""
        ...


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand registered."""
    from cycleguard._demo import add_demo_command
    from cycleguard.cli import add_admin_commands
    from cycleguard.server.cli import add_serve_command

    parser = _Parser(prog="cycleguard", description="Typed budget guard for LLM calls.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    add_demo_command(commands)
    add_serve_command(commands)
    add_admin_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
