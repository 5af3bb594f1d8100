"""``cycleguard serve``: run the embedded Cycles server (both planes, one port).

The store is opened (and the seed applied) before the port is served, so a
bad database path or seed file ends the command with a one-line error and a
non-zero exit instead of a traceback. uvicorn handles SIGINT and SIGTERM:
in-flight requests finish, the sweeper stops, and the SQLite writer drains
what it holds before the file closes.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sqlite3
import sys
from contextlib import AsyncExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import uvicorn

from cycleguard.server.app import CyclesServer
from cycleguard.server.clock import SystemClock
from cycleguard.server.seed import SeedError, apply_seed, load_seed
from cycleguard.server.stores.memory import memory_store
from cycleguard.server.stores.sqlite import sqlite_store

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from contextlib import AbstractAsyncContextManager
    from types import FrameType

    from cycleguard.__main__ import Commands
    from cycleguard.server.seed import Seed
    from cycleguard.server.stores import Store

__all__ = ("ADMIN_KEY_ENV", "DEFAULT_DB", "add_serve_command", "serve")

ADMIN_KEY_ENV = "CYCLES_ADMIN_API_KEY"
DEFAULT_DB = "cycleguard.db"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65_535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def add_serve_command(commands: Commands) -> None:
    """Register ``serve`` on the ``cycleguard`` command line."""
    parser = commands.add_parser(
        "serve",
        help="run the embedded Cycles server",
        description="Serve the Cycles runtime and admin planes on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=7878, help="TCP port (default 7878; 0 picks one)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, help=f"SQLite database file (default ./{DEFAULT_DB})")
    where.add_argument("--memory", action="store_true", help="keep everything in memory")
    parser.add_argument(
        "--admin-key",
        help=f"admin API key (default: ${ADMIN_KEY_ENV}; none disables the admin plane)",
    )
    parser.add_argument(
        "--sweep-interval",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between expiry sweeps (default 1)",
    )
    parser.add_argument(
        "--seed", type=Path, metavar="FILE", help="TOML file of things to create at start"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(handler=serve)


def _fail(message: str) -> int:
    print(f"cycleguard serve: {message}", file=sys.stderr)
    return 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0) so asyncio turns on TCP_NODELAY for accepted connections.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


async def _run(args: argparse.Namespace, seed: Seed | None, sock: socket.socket) -> int:
    admin_key: str | None = args.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
    open_store: Callable[[], AbstractAsyncContextManager[Store]]
    if args.memory:
        open_store, where = memory_store, "memory"
    else:
        path = args.db or Path(DEFAULT_DB)
        open_store, where = partial(sqlite_store, path), f"SQLite {path}"
    clock = SystemClock()
    server = CyclesServer(
        open_store=open_store,
        clock=clock,
        admin_key=admin_key,
        sweep_interval=args.sweep_interval,
    )
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(server.running())
        except (sqlite3.Error, OSError, ValueError) as error:
            return _fail(f"cannot open the database ({where}): {error}")
        if seed is not None:
            try:
                created = await apply_seed(server.store, seed, clock)
            except SeedError as error:
                return _fail(f"seed {args.seed}: {error}")
            for key in created:
                print(
                    f"cycleguard: API key {key.key_id} for tenant {key.tenant_id} ({key.name}): "
                    f"{key.secret}",
                    flush=True,
                )
        _settle_the_process()
        host, port = sock.getsockname()[:2]
        plane = "runtime + admin" if admin_key else "runtime (admin plane disabled: no admin key)"
        print(f"cycleguard: serving {plane} on http://{host}:{port} ({where})", flush=True)
        config = uvicorn.Config(
            server.app,
            lifespan="off",
            access_log=bool(args.access_log),
            log_level="info",
            timeout_graceful_shutdown=10,
        )
        with _quiet_stop_signals():
            await uvicorn.Server(config).serve(sockets=[sock])
    return 0


_YOUNG_GENERATION_THRESHOLD = 2_000
"""Tracked allocations between young-generation collections while serving."""


def _settle_the_process() -> None:
    """Process-wide tuning, just before serving (the server owns this process)."""
    # What is alive now (modules, the records loaded from the database) lives as long
    # as the server. Full collections scan every tracked object while every request
    # waits, so keep these out of them.
    gc.collect()
    gc.freeze()
    # Requests waiting for their group commit keep their objects alive, so under load
    # the young generation swings past the default 700 on every batch and the
    # collector makes a pass over objects about to be freed by reference counting.
    # Measured at 32 clients on the SQLite store over 10 s: 376 young passes at 700,
    # 76 at 2,000; about 30 µs less CPU per reserve+commit pair, while the longest
    # middle-generation pass went from 2.5 to 5 ms.
    gc.set_threshold(_YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    # asyncio reads each socket into a fresh 256 KiB buffer. glibc's malloc hands out
    # blocks that big with mmap, then mremap and munmap as the buffer shrinks and dies
    # (three system calls and a page fault per read) until freeing a larger mmapped
    # block raises its threshold. Free one now. Elsewhere this is a harmless allocation.
    block = bytearray(1 << 20)
    del block


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    del signum, frame


@contextmanager
def _quiet_stop_signals() -> Generator[None]:
    """While uvicorn serves, it handles SIGINT/SIGTERM itself; once it has shut down it
    re-raises them to the previous handlers. Make those no-ops, so the store still closes
    and the command exits 0 instead of dying by the signal (or a KeyboardInterrupt)."""
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in stop_signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT or SIGTERM; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    seed: Seed | None = None
    if args.seed is not None:
        try:
            seed = load_seed(args.seed)
        except SeedError as error:
            return _fail(str(error))
    try:
        sock = _bind(args.host, args.port)
    except OSError as error:
        return _fail(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}")
    with sock:
        return anyio.run(_run, args, seed, sock, backend="asyncio")
