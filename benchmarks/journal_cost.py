"""What one durable journal record costs the client process, piece by piece.

The settlement journal writes a record before every commit (temp file, fsync,
rename, directory fsync) on its own thread, and removes it after. This script
measures, in one process and one run, process CPU per record (every thread):

- ``kernel``: the bare ``os`` calls for one record, in a loop on this thread:
  create + write + fsync + close + rename + directory fsync + unlink. No Python
  around them: the floor for a record that is fsync'd before the request leaves;
- ``no fsync``: the same calls without either fsync (what the official SDKs do);
- ``thread round trip``: a no-op call handed to the journal's kind of worker
  thread and back, on asyncio and on trio: the price of not blocking the loop;
- ``Journal.write + discard_soon``: what a guarded call pays, on each loop.

Median of ``--repeats`` runs of ``--records`` records, in a fresh temporary
directory on the same filesystem as the default journal directory's parent
(``--dir`` to choose another).

Run: ``uv run python benchmarks/journal_cost.py [--records N] [--repeats R] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from cycleguard import Action, Amount, CommitRequest, Subject
from cycleguard._core._journal_format import event_fallback, new_record
from cycleguard._journal import Journal
from cycleguard._worker import SerialWorker

if TYPE_CHECKING:
    from collections.abc import Callable

RECORD = b'{"reservation_id": "rsv", "mode": "commit"' + b" " * 600 + b"}"


def bare_calls(directory: str, records: int, *, fsync: bool) -> float:
    """CPU microseconds per record for the bare system calls."""
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        start = time.process_time()
        for index in range(records):
            temp = os.path.join(directory, f"record-{index}.json.tmp")
            target = os.path.join(directory, f"record-{index}.json")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, RECORD)
            if fsync:
                os.fsync(fd)
            os.close(fd)
            os.replace(temp, target)
            if fsync:
                os.fsync(directory_fd)
            os.unlink(target)
        return (time.process_time() - start) / records * 1e6
    finally:
        os.close(directory_fd)


def round_trip(backend: str, records: int) -> float:
    """CPU microseconds per no-op call handed to a worker thread and back."""
    worker = SerialWorker("bench-round-trip")

    async def main() -> float:
        await worker.run(lambda: None)
        start = time.process_time()
        for _ in range(records):
            await worker.run(lambda: None)
        return (time.process_time() - start) / records * 1e6

    return anyio.run(main, backend=backend)


def journal_writes(directory: Path, backend: str, records: int) -> float:
    """CPU microseconds per ``Journal.write`` + ``discard_soon`` (a guarded call's share)."""
    journal = Journal(directory, base_url="http://127.0.0.1:7878", api_key="bench", tenant="t")
    commit = CommitRequest(idempotency_key="k" * 32, actual=Amount.tokens(70))
    fallback = event_fallback(
        "rsv", commit, Subject(tenant="bench", agent="a"), Action("llm.completion", "m")
    )
    made = [
        new_record(
            reservation_id=f"rsv_{index:08d}",
            base_url=journal.base_url,
            commit=commit,
            event=fallback,
            now_ms=0,
        )
        for index in range(records + 20)
    ]

    async def main() -> float:
        for record in made[:20]:  # the directory is made on the first write
            await journal.write(record)
            journal.discard_soon(record.reservation_id)
        start = time.process_time()
        for record in made[20:]:
            await journal.write(record)
            journal.discard_soon(record.reservation_id)
        return (time.process_time() - start) / records * 1e6

    return anyio.run(main, backend=backend)


def main() -> None:
    """Print the median CPU per record of each piece."""
    parser = argparse.ArgumentParser(description="CPU per durable journal record.")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to make temp directories")
    args = parser.parse_args()
    parent = args.dir or Path.home()
    measures: dict[str, Callable[[Path], float]] = {
        "kernel (create, write, fsync, rename, dir fsync, unlink)": lambda d: bare_calls(
            str(d), args.records, fsync=True
        ),
        "kernel without either fsync": lambda d: bare_calls(str(d), args.records, fsync=False),
        "thread round trip, no-op (asyncio)": lambda _: round_trip("asyncio", args.records),
        "thread round trip, no-op (trio)": lambda _: round_trip("trio", args.records),
        "Journal.write + discard_soon (asyncio)": lambda d: journal_writes(
            d, "asyncio", args.records
        ),
        "Journal.write + discard_soon (trio)": lambda d: journal_writes(d, "trio", args.records),
    }
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(args.repeats):
        for name, measure in measures.items():
            with tempfile.TemporaryDirectory(dir=parent, prefix="cycleguard-bench-") as tmp:
                samples[name].append(measure(Path(tmp)))
    print(f"process CPU per record, median of {args.repeats} runs x {args.records} records")
    for name, values in samples.items():
        print(f"{name:<58} {statistics.median(values):7.0f} us")


if __name__ == "__main__":
    main()
