"""What ``httpx`` and ``httpx2`` transports share.

The two libraries have the same API and the same exception hierarchy, but every
class is distinct (``httpx.ReadTimeout`` is not ``httpx2.ReadTimeout``). So the
table is built once here from the classes each module passes in by name, and
each transport module keeps its own small, fully typed ``send``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cycleguard._core._errors import ConnectionFailed, InvalidResponse, TransportError
from cycleguard.transports._mapping import (
    ExceptionMap,
    connection_failed,
    describe,
    invalid_response,
    timed_out,
)

if TYPE_CHECKING:
    from cycleguard._core._http import Timeouts

# httpcore reports a server that closes the connection early as RemoteProtocolError,
# with one of these two fixed texts (its own, and h11's for a truncated body). Any
# other RemoteProtocolError is malformed HTTP. If a release rewords them, the failure
# degrades to InvalidResponse, which is also retryable; the conformance suite pins it.
_CLOSED_EARLY = ("Server disconnected", "peer closed connection")


def _remote_protocol_error(exc: Exception) -> TransportError:
    if str(exc).startswith(_CLOSED_EARLY):
        return ConnectionFailed(
            message=describe("the server closed the connection before a full response", exc),
            request_sent=True,
        )
    return InvalidResponse(message=describe("malformed HTTP response", exc))


def timeout_extension(timeouts: Timeouts) -> dict[str, float | None]:
    """The per-request ``timeout`` extension both libraries read."""
    return {
        "connect": timeouts.connect,
        "read": timeouts.read,
        "write": timeouts.write,
        "pool": timeouts.pool,
    }


def httpx_family_errors(
    *,
    connect_timeout: type[Exception],
    read_timeout: type[Exception],
    write_timeout: type[Exception],
    pool_timeout: type[Exception],
    timeout_exception: type[Exception],
    connect_error: type[Exception],
    read_error: type[Exception],
    write_error: type[Exception],
    network_error: type[Exception],
    proxy_error: type[Exception],
    unsupported_protocol: type[Exception],
    local_protocol_error: type[Exception],
    remote_protocol_error: type[Exception],
    protocol_error: type[Exception],
    transport_error: type[Exception],
    decoding_error: type[Exception],
) -> ExceptionMap:
    """The exception table for one member of the httpx family.

    Base classes (``timeout_exception``, ``network_error``, ``protocol_error``,
    ``transport_error``) catch whatever a future release adds below them, with the
    most cautious reading: a request that may have reached the server.
    """
    return ExceptionMap(
        {
            connect_timeout: timed_out("connect", "connecting took too long"),
            read_timeout: timed_out("read", "no response data within the read timeout"),
            write_timeout: timed_out("write", "sending the request took too long"),
            pool_timeout: timed_out("pool", "no free connection within the pool timeout"),
            timeout_exception: timed_out("read", "the request timed out"),
            connect_error: connection_failed("could not connect", request_sent=False),
            proxy_error: connection_failed("the proxy failed", request_sent=False),
            unsupported_protocol: connection_failed("unsupported protocol", request_sent=False),
            # h11 quotes the offending header value: leave its text out.
            local_protocol_error: connection_failed(
                "the request could not be encoded as HTTP", request_sent=False, detail=False
            ),
            read_error: connection_failed(
                "the connection broke while reading the response", request_sent=True
            ),
            write_error: connection_failed(
                "the connection broke while sending the request", request_sent=True
            ),
            network_error: connection_failed("the connection broke", request_sent=True),
            remote_protocol_error: _remote_protocol_error,
            protocol_error: invalid_response("HTTP protocol error"),
            transport_error: connection_failed("transport error", request_sent=True),
            decoding_error: invalid_response("the response body could not be decoded"),
        }
    )
