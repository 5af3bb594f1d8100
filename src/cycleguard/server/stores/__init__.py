"""Where the server keeps its records: the :class:`Store` protocol and its codec.

A store runs one atomic read-modify-write per request: :meth:`Store.atomic`
calls a synchronous function with a :class:`Tx`, through which the function
reads the records it needs and writes the ones it changes. Either all of the
writes become visible (and, for a durable store, durable) or none do.

The function must be pure apart from its ``Tx``: a store may run it more than
once. That is what lets an optimistic store fit: a Redis store would WATCH
the keys the function reads, buffer its writes into MULTI/EXEC and re-run the
function when EXEC reports a conflict; a key it has not fetched yet can be
fetched between runs. The memory and SQLite stores hold every record in
memory and run the function exactly once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from returns.pipeline import is_successful

from cycleguard._core._wire import LENIENT, structure
from cycleguard.server.records import (
    RECORD_TYPES,
    JsonText,
    Record,
    StoredRecord,
    compact_json,
    json_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from cycleguard._core._json import JsonObject

__all__ = (
    "RECORD_BY_KIND",
    "Store",
    "StoreFailedError",
    "Tx",
    "decode_record",
    "encode_record",
    "kind_of",
)

R = TypeVar("R", bound=StoredRecord)
T = TypeVar("T")

RECORD_BY_KIND: dict[str, type[Record]] = {cls.__name__: cls for cls in RECORD_TYPES}
"""Record types by their stored kind name."""


class StoreFailedError(RuntimeError):
    """The store could not make a change durable; it refuses further work."""


class Tx(Protocol):
    """The view of the records one atomic function gets."""

    def get(self, kind: type[R], key: str) -> R | None:
        """The record of type ``kind`` stored under ``key``, as this transaction sees it."""
        ...

    def put(self, record: StoredRecord) -> None:
        """Store ``record`` under its ``store_key`` (replacing any previous one)."""
        ...

    def delete(self, kind: type[StoredRecord], key: str) -> None:
        """Remove the record of type ``kind`` under ``key``, if any."""
        ...

    def scan(self, kind: type[R], tenant: str | None = None) -> list[R]:
        """Every record of type ``kind`` (owned by ``tenant`` when given), by key."""
        ...

    def due(self, kind: type[R], until_ms: int, limit: int) -> list[R]:
        """Up to ``limit`` records of type ``kind`` whose ``due_index`` is at most ``until_ms``."""
        ...


class Store(Protocol):
    """Atomic access to the server's records."""

    async def atomic(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` as one atomic read-modify-write and return its result.

        When this returns, the writes are visible to every later call and, in
        a durable store, survive a crash. A function that raises writes nothing.
        """
        ...


def kind_of(record: StoredRecord) -> str:
    """The stored kind name of a record."""
    return type(record).__name__


def _structure_json_text(value: object, _: object) -> JsonText:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return json_text(cast("JsonObject", value))


# Records go through the codec's tolerant reader. Only records hold JsonText, and
# only this module (un)structures records, so teaching the shared converter about
# it here changes nothing else it reads or writes. A JsonText is written into the
# record's JSON as the object it encodes, without decoding it.
LENIENT.register_unstructure_hook(JsonText, lambda value: value)
LENIENT.register_structure_hook(JsonText, _structure_json_text)


def encode_record(record: StoredRecord) -> str:
    """A record as compact JSON text."""
    return compact_json(LENIENT.unstructure(record))


def decode_record(kind: str, text: str) -> Record:
    """The record of ``kind`` stored as ``text``; raises ``ValueError`` if it does not decode."""
    cls = RECORD_BY_KIND.get(kind)
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    decoded = structure(json.loads(text), cls, converter=LENIENT)
    if not is_successful(decoded):
        raise ValueError(f"stored {kind} does not decode: {decoded.failure()}")
    return decoded.unwrap()
