"""Checks and conversions every transport shares.

:func:`check_request` runs before any I/O so that all transports refuse the same
requests in the same way (a :class:`~cycleguard.errors.UsageError` naming the
problem, never quoting a header value) instead of each library failing
differently, some of them with our API key in the message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cycleguard._core._errors import TransportUnavailable, UsageError
from cycleguard._core._http import Headers, HttpRequest, Timeouts

if TYPE_CHECKING:
    from collections.abc import Iterable

DEFAULT_TIMEOUTS = Timeouts()
"""The timeouts a transport uses when the caller gives none."""

_URL = re.compile(r"[\x21-\x7e]+")  # percent-encoded already: no spaces, no non-ASCII
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII, with spaces and tabs only between visible characters (h11's rule, ASCII only).
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[ \t]*[\x21-\x7e])*)?")


def check_request(request: HttpRequest) -> None:
    """Raise :class:`~cycleguard.errors.UsageError` if ``request`` cannot go out as HTTP/1.1.

    The URL must be absolute ``http`` or ``https`` with a host, already percent-encoded
    (printable ASCII, no spaces); the method and header names must be HTTP tokens;
    header values must be printable ASCII without leading or trailing whitespace; a
    ``Content-Length`` header must match the body, and ``Transfer-Encoding`` is left to
    the transport. Messages name the offending header, never its value.

    >>> check_request(HttpRequest("GET", "http://127.0.0.1:7878/v1/balances"))
    >>> bad = HttpRequest("GET", "http://h/", (("X-Cycles-API-Key", "k\\r\\nX: y"),))
    >>> check_request(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cycleguard._core._errors.UsageError: header 'X-Cycles-API-Key' has an invalid value ...
    """
    try:
        split = urlsplit(request.url)
        _ = split.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise UsageError("request URL is not a valid URL") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise UsageError("request URL must be absolute http:// or https:// with a host")
    if not _URL.fullmatch(request.url):
        raise UsageError("request URL must be percent-encoded printable ASCII without spaces")
    if not _TOKEN.fullmatch(request.method):
        raise UsageError(f"request method {request.method!r} is not an HTTP token")
    for name, value in request.headers:
        if not _TOKEN.fullmatch(name):
            raise UsageError(f"header name {name!r} is not an HTTP token")
        if not _FIELD_VALUE.fullmatch(value):
            raise UsageError(
                f"header {name!r} has an invalid value (it must be printable ASCII without"
                " surrounding whitespace; the value is not shown)"
            )
        lowered = name.lower()
        if lowered == "content-length" and value.strip() != str(len(request.body)):
            raise UsageError(
                f"header {name!r} does not match the body length ({len(request.body)} bytes)"
            )
        if lowered == "transfer-encoding":
            raise UsageError("the transport frames the body itself; do not set Transfer-Encoding")


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Turn raw header pairs into :data:`~cycleguard.transports.Headers` (latin-1, lossless).

    >>> decode_headers([(b"Content-Type", b"application/json")])
    (('Content-Type', 'application/json'),)
    """
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def closed(transport: str) -> TransportUnavailable:
    """The failure for a send after ``aclose()``."""
    return TransportUnavailable(message=f"{transport} is closed")
