"""HTTP request and response values: the currency between the client and a transport.

These are plain frozen values. A transport turns an :class:`HttpRequest` into an
:class:`HttpResponse` (or a transport failure value); nothing here performs I/O.
"""

from __future__ import annotations

from typing import final

import attrs

Headers = tuple[tuple[str, str], ...]
"""Header pairs in order; names are compared case-insensitively."""

_REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"x-cycles-api-key", "x-admin-api-key", "authorization"})


def _headers_repr(headers: Headers) -> str:
    shown = [(k, _REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers]
    return repr(tuple(shown))


def header_value(headers: Headers, name: str) -> str | None:
    """Return the first value of header ``name`` (case-insensitive), or ``None``.

    >>> header_value((("Content-Type", "application/json"),), "content-type")
    'application/json'
    """
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@final
@attrs.frozen
class HttpRequest:
    """One HTTP request as the client hands it to a transport.

    ``url`` is absolute. Secret headers never show in the ``repr``:

    >>> request = HttpRequest("GET", "http://x/v1/balances", (("X-Cycles-API-Key", "s3cret"),))
    >>> "s3cret" in repr(request), request.header("x-cycles-api-key")
    (False, 's3cret')
    """

    method: str
    url: str
    headers: Headers = attrs.field(default=(), repr=_headers_repr)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name``, case-insensitively."""
        return header_value(self.headers, name)


@final
@attrs.frozen
class HttpResponse:
    """One HTTP response as a transport hands it back to the client."""

    status: int
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name``, case-insensitively."""
        return header_value(self.headers, name)


@final
@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds each phase of an HTTP exchange may take; ``None`` means no limit.

    ``pool`` bounds the wait for a free connection when a pool is full.
    """

    connect: float | None = 2.0
    read: float | None = 5.0
    write: float | None = 5.0
    pool: float | None = 5.0

    @property
    def total(self) -> float | None:
        """An upper bound for one exchange (connect + write + read), or ``None`` if unbounded."""
        parts = (self.connect, self.write, self.read)
        if any(part is None for part in parts):
            return None
        return sum(part for part in parts if part is not None)
