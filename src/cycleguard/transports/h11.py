"""The default transport: HTTP/1.1 keep-alive connections on anyio byte streams and h11.

:class:`H11Transport` needs nothing beyond cycleguard's own dependencies and runs on
asyncio and on trio. It keeps a pool of keep-alive connections to **one** origin (the
scheme, host and port of ``base_url``), which is all a Cycles client talks to.

What it does:

* reuses connections (most recently used first) and notices, before reusing one,
  whether the server closed it while it sat idle;
* retries a request **once, on a fresh connection**, when its connection broke before
  any byte of the response arrived (safe for Cycles: every POST carries an
  idempotency key); any other failure is returned as a value;
* applies the connect, write, read and pool phases of :class:`~cycleguard.transports.Timeouts`;
* reads Content-Length, chunked and close-delimited bodies, up to ``max_response_bytes``;
* speaks TLS through :mod:`ssl`, verifying against the system trust store.

What it does not do: proxies (``HTTP_PROXY`` and friends are ignored), HTTP/2, cookies,
redirects, compression. If you need a proxy or HTTP/2, pass one of the other
transports to the client instead: ``cycleguard.transports.httpx``,
``cycleguard.transports.httpx2`` (both honour proxy settings; httpx2 and httpx also
speak HTTP/2) or ``cycleguard.transports.aiohttp`` (asyncio only).
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Final, Literal, Self, final
from urllib.parse import urlsplit

import anyio
import attrs
import h11
from returns.result import Failure, Result, Success

from cycleguard._core._errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
    TransportUnavailable,
    UsageError,
)
from cycleguard._core._http import HttpRequest, HttpResponse, Timeouts
from cycleguard.transports._channels import (
    AnyioChannel,
    Channel,
    connect_asyncio,
    current_run,
    running_on_asyncio,
    running_on_trio,
    trio_channel,
)
from cycleguard.transports._mapping import redact_secrets
from cycleguard.transports._util import check_request, closed

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import ByteStream

__all__ = ("H11Transport", "H11TransportStatistics")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_END_OF_MESSAGE: Final = h11.EndOfMessage()
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
_MAX_DETAIL: Final = 200
_OTHER_LOOP_MESSAGE: Final = (
    "this H11Transport belongs to the event loop it was first used on; "
    "create a new transport (or client) for each event loop"
)


@final
@attrs.frozen(kw_only=True)
class H11TransportStatistics:
    """A snapshot of an :class:`H11Transport`'s pool, from :meth:`H11Transport.statistics`.

    Attributes:
        max_connections: The pool's size limit.
        connections_open: Connections open now, idle or carrying a request.
        connections_idle: Open connections waiting in the pool for a request.
        connections_opened: Connections opened since the transport was created.
        requests_waiting: Requests waiting for a free pool slot.
        requests_sent: HTTP requests written to a connection (a retried request counts twice).
        retries: Requests retried on a fresh connection after their connection broke
            before any byte of the response arrived.
    """

    max_connections: int
    connections_open: int
    connections_idle: int
    connections_opened: int
    requests_waiting: int
    requests_sent: int
    retries: int


@final
class _Connection:
    """One open connection with its HTTP/1.1 state machine."""

    __slots__ = ("channel", "expires_at", "h11")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.h11 = h11.Connection(h11.CLIENT)
        self.expires_at = 0.0


@final
class _BrokenBeforeResponse:
    """An attempt whose connection failed before any byte of the response arrived."""

    __slots__ = ("failure",)

    def __init__(self, failure: ConnectionFailed) -> None:
        self.failure = failure


def _default_ssl_context() -> ssl.SSLContext:
    """A client context verifying against the system trust store.

    Uses ``truststore`` (the platform verifier) when it is installed, else
    :func:`ssl.create_default_context`, which loads the system's CA bundle.
    """
    try:
        import truststore  # optional: used only when it is installed
    except ImportError:
        context = ssl.create_default_context()
    else:
        context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _describe(exc: BaseException) -> str:
    """A short description of a network exception (never a header value)."""
    cause = exc.__cause__ if not str(exc) and exc.__cause__ is not None else exc
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


@final
class H11Transport:
    """An HTTP/1.1 keep-alive connection pool to one origin, on anyio and h11.

    This is the transport a client uses when it is given none. It runs on asyncio and
    trio alike, but one instance belongs to the event loop it is first used on: a send
    from any other loop returns :class:`~cycleguard.errors.TransportUnavailable`.

    Args:
        base_url: ``http://`` or ``https://`` URL of the server; only its origin (scheme,
            host and port) is used. A request for any other origin is answered with
            :class:`~cycleguard.errors.TransportUnavailable` without touching the network.
        max_connections: Most connections open at once; further requests wait for a free
            one, up to ``timeouts.pool`` seconds.
        timeouts: ``connect`` bounds opening a connection (TCP and TLS handshake);
            ``write`` bounds writing the request; ``read`` bounds each wait for response
            bytes; ``pool`` bounds the wait for a free connection.
        max_response_bytes: Largest response body accepted; a larger one is
            :class:`~cycleguard.errors.InvalidResponse` and its connection is closed.
        ssl_context: TLS settings for ``https`` origins. By default the system trust
            store verifies the server's certificate.
        keepalive_expiry: Seconds an idle connection may wait in the pool before it is
            closed instead of reused; keep it below the server's own idle timeout.
            ``None`` keeps idle connections until the server closes them.

    Raises:
        UsageError: ``base_url`` is not an absolute ``http``/``https`` URL with a host,
            carries credentials, or a number is out of range.

    Proxies and HTTP/2 are not supported; use the ``httpx``, ``httpx2`` or ``aiohttp``
    transports for those.

    Example::

        config = ClientConfig.from_env()
        async with H11Transport(config.base_url, max_connections=16) as transport:
            client = CyclesClient(config, transport=transport)
    """

    __slots__ = (
        "_active",
        "_closed",
        "_connect_timeout",
        "_host",
        "_host_header",
        "_idle",
        "_keepalive_expiry",
        "_max_connections",
        "_max_response_bytes",
        "_opened",
        "_origin",
        "_origin_key",
        "_pool_timeout",
        "_port",
        "_prefix",
        "_read_timeout",
        "_requests_sent",
        "_retries",
        "_run",
        "_slots",
        "_ssl_context",
        "_write_timeout",
    )

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 64,
        timeouts: Timeouts = Timeouts(),
        max_response_bytes: int = 8 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float | None = 4.0,
    ) -> None:
        try:
            parts = urlsplit(base_url)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"base_url is not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise UsageError("base_url must be an absolute http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise UsageError("base_url must not carry credentials; send them as headers")
        if max_connections < 1:
            raise UsageError("max_connections must be at least 1")
        if max_response_bytes < 0:
            raise UsageError("max_response_bytes must not be negative")
        if keepalive_expiry is not None and keepalive_expiry < 0:
            raise UsageError("keepalive_expiry must not be negative")
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        netloc_host = f"[{host}]" if ":" in host else host
        self._host = host
        self._port = port
        self._origin_key = (scheme, host, port)
        self._origin = f"{scheme}://{netloc_host}:{port}"
        self._host_header = (
            netloc_host if port == _DEFAULT_PORTS[scheme] else f"{netloc_host}:{port}"
        )
        # The prefix exactly as the caller spelled it: URLs built from base_url match it
        # with one startswith(); anything else takes the slow, parsing path.
        self._prefix = f"{parts.scheme}://{parts.netloc}"
        self._ssl_context = (ssl_context or _default_ssl_context()) if scheme == "https" else None
        self._connect_timeout = timeouts.connect
        self._write_timeout = timeouts.write
        self._read_timeout = timeouts.read
        self._pool_timeout = timeouts.pool
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._keepalive_expiry = keepalive_expiry
        self._slots = anyio.Semaphore(max_connections, max_value=max_connections)
        self._idle: deque[_Connection] = deque()
        self._active: set[_Connection] = set()
        self._closed = False
        self._run: object = None  # the event loop of the first send; connections live there
        self._opened = 0
        self._requests_sent = 0
        self._retries = 0

    def __repr__(self) -> str:
        return f"H11Transport({self._origin!r}, max_connections={self._max_connections})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> H11TransportStatistics:
        """Return a snapshot of the pool's state and counters."""
        return H11TransportStatistics(
            max_connections=self._max_connections,
            connections_open=len(self._idle) + len(self._active),
            connections_idle=len(self._idle),
            connections_opened=self._opened,
            requests_waiting=self._slots.statistics().tasks_waiting,
            requests_sent=self._requests_sent,
            retries=self._retries,
        )

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later sends fail. Safe to call twice.

        Requests in flight on this transport end with
        :class:`~cycleguard.errors.TransportUnavailable`.
        """
        if self._closed:
            return
        self._closed = True
        connections = [*self._idle, *self._active]
        self._idle.clear()
        if self._run is not None and current_run() is not self._run:
            # Called from another event loop than the connections' own: close what can
            # be closed without that loop, and do not await anything of it.
            for connection in connections:
                connection.channel.abandon()
            self._active.clear()
            await anyio.lowlevel.checkpoint()
            return
        for connection in connections:
            await connection.channel.aclose()

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Send ``request`` over a pooled connection and return the whole response.

        Args:
            request: The request; its URL must be on this transport's origin.

        Returns:
            The response, or a transport failure value: ``ConnectionFailed``,
            ``TimedOut`` (with the phase that ran out), ``InvalidResponse`` or
            ``TransportUnavailable``.

        Raises:
            UsageError: The method, URL or a header cannot be written as HTTP/1.1 (for
                instance a header value containing a line break). Values are not shown.
        """
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return Failure(closed("H11Transport"))
        run = current_run()
        if run is not self._run:
            if self._run is not None:
                await anyio.lowlevel.checkpoint()
                return Failure(TransportUnavailable(message=_OTHER_LOOP_MESSAGE))
            self._run = run
        target = self._target(request)
        if target is None:
            await anyio.lowlevel.checkpoint()
            return Failure(TransportUnavailable(message=self._foreign_origin_message()))
        event = self._h11_request(request, target)
        slots = self._slots
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            acquired = False
            with anyio.move_on_after(self._pool_timeout):
                await slots.acquire()
                acquired = True
            if not acquired:
                return Failure(
                    TimedOut(
                        phase="pool",
                        message=(
                            f"no free connection to {self._origin} within "
                            f"{self._pool_timeout} s ({self._max_connections} in use)"
                        ),
                    )
                )
        try:
            return await self._send_holding_slot(event, request)
        finally:
            slots.release()

    # -- internals -------------------------------------------------------------------

    def _target(self, request: HttpRequest) -> str | None:
        """The request target (path and query) of its URL, or ``None`` off this origin."""
        url = request.url
        prefix = self._prefix
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if not rest:
                return "/"
            if "#" not in rest:
                first = rest[0]
                if first == "/":
                    return rest
                if first == "?":
                    return "/" + rest
        return self._target_slow(request)

    def _target_slow(self, request: HttpRequest) -> str | None:
        check_request(request)  # a malformed URL is a UsageError on every transport
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        if parts.username is not None:
            return None
        port = parts.port
        if (scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]) != self._origin_key:
            return None
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path

    def _foreign_origin_message(self) -> str:
        return (
            f"this H11Transport only sends to {self._origin}; the request's URL is on "
            "another origin (create one transport per server)"
        )

    def _h11_request(self, request: HttpRequest, target: str) -> h11.Request:
        method = request.method
        body = request.body
        headers = list(request.headers)
        has_host = False
        has_length = False
        for name, _ in headers:
            lowered = name.lower()
            if lowered == "host":
                has_host = True
            elif lowered in ("content-length", "transfer-encoding"):
                check_request(request)  # rare: raises for a mismatch or any Transfer-Encoding
                has_length = True
        if not has_host:
            headers.insert(0, ("Host", self._host_header))
        if not has_length and (body or method not in _NO_BODY_METHODS):
            headers.append(("Content-Length", str(len(body))))
        try:
            return h11.Request(method=method, target=target, headers=headers)
        except (h11.LocalProtocolError, ValueError):
            # h11 checks the same grammar as check_request; let it name the culprit
            # (never quoting a value), as every transport does.
            check_request(request)
            raise UsageError("the request cannot be written as HTTP/1.1") from None

    async def _send_holding_slot(
        self, event: h11.Request, request: HttpRequest
    ) -> Result[HttpResponse, TransportError]:
        if self._closed:  # aclose() ran while this request waited for a slot
            await anyio.lowlevel.checkpoint()
            return Failure(closed("H11Transport"))
        connection: _Connection | None = None
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                candidate = idle.pop()
                if candidate.expires_at > now and not candidate.channel.readable_while_idle():
                    connection = candidate
                    break
                await candidate.channel.aclose()
        if connection is None:
            opened = await self._open()
            if not isinstance(opened, _Connection):
                return Failure(opened)
            connection = opened
        outcome = await self._exchange(connection, event, request)
        if isinstance(outcome, HttpResponse):
            return Success(outcome)
        if not isinstance(outcome, _BrokenBeforeResponse):
            return Failure(outcome)
        # The connection broke before the server said anything: retry once, on a fresh
        # connection (another idle one may be just as stale).
        self._retries += 1
        opened = await self._open()
        if not isinstance(opened, _Connection):
            return Failure(opened)
        outcome = await self._exchange(opened, event, request)
        if isinstance(outcome, HttpResponse):
            return Success(outcome)
        if isinstance(outcome, _BrokenBeforeResponse):
            return Failure(outcome.failure)
        return Failure(outcome)

    async def _open(self) -> _Connection | TransportError:
        """Open a new connection (TCP, then TLS for ``https``) within the connect timeout."""
        ssl_context = self._ssl_context
        with anyio.move_on_after(self._connect_timeout):
            try:
                if running_on_asyncio():
                    channel: Channel = await connect_asyncio(self._host, self._port, ssl_context)
                else:
                    if ssl_context is None:
                        stream: ByteStream = await anyio.connect_tcp(self._host, self._port)
                    else:
                        stream = await anyio.connect_tcp(
                            self._host,
                            self._port,
                            ssl_context=ssl_context,
                            tls_hostname=self._host,
                            tls_standard_compatible=False,
                        )
                    channel = trio_channel(stream) if running_on_trio() else AnyioChannel(stream)
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                return ConnectionFailed(
                    message=f"cannot connect to {self._origin}: {_describe(exc)}"
                )
            if self._closed:
                await channel.aclose()
                return closed("H11Transport")
            self._opened += 1
            return _Connection(channel)
        return TimedOut(
            phase="connect",
            message=f"no connection to {self._origin} within {self._connect_timeout} s",
        )

    async def _exchange(
        self, connection: _Connection, event: h11.Request, request: HttpRequest
    ) -> HttpResponse | _BrokenBeforeResponse | TransportError:
        """Write one request on ``connection`` and read its response.

        The connection goes back to the pool only if the exchange completed and the
        server allows reuse; on any failure, and on cancellation, it is closed.
        """
        h = connection.h11
        channel = connection.channel
        body = request.body
        try:
            payload = h.send(event) or b""
            if body:
                payload += h.send(h11.Data(data=body)) or b""
            payload += h.send(_END_OF_MESSAGE) or b""
        except h11.LocalProtocolError:
            await channel.aclose()
            raise UsageError("the request body does not match its Content-Length header") from None
        read_timeout = self._read_timeout
        max_bytes = self._max_response_bytes
        phase: Literal["write", "read"] = "write"
        received = False
        end_of_stream = False
        status: int | None = None
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        result: HttpResponse | _BrokenBeforeResponse | TransportError | None = None
        reusable = False
        self._active.add(connection)
        try:
            with channel.timeouts():
                if await channel.send_within(payload, self._write_timeout):
                    phase = "read"
                    self._requests_sent += 1
                    received_event: type[h11.NEED_DATA | h11.PAUSED] | h11.Event
                    received_event = h11.NEED_DATA  # nothing can have arrived yet
                    while True:
                        if received_event is h11.NEED_DATA:
                            try:
                                data = await channel.receive_within(read_timeout)
                            except anyio.EndOfStream:
                                if not received:
                                    result = self._closed_before_response()
                                    break
                                data = b""
                                end_of_stream = True
                            if data is None:
                                break  # the read timeout expired
                            received = True
                            h.receive_data(data)
                        elif isinstance(received_event, h11.Data):
                            chunk = received_event.data
                            size += len(chunk)
                            if size > max_bytes:
                                result = self._too_large(status)
                                break
                            chunks.append(chunk)
                        elif isinstance(received_event, h11.Response):
                            status = received_event.status_code
                            declared = 0
                            for name, value in received_event.headers.raw_items():
                                if len(name) == 14 and name.lower() == b"content-length":
                                    declared = int(value)
                                headers.append((name.decode("latin-1"), value.decode("latin-1")))
                            if declared > max_bytes:
                                result = self._too_large(status)
                                break
                        elif isinstance(received_event, h11.EndOfMessage):
                            assert status is not None  # h11 yields Response before the end
                            result = HttpResponse(status, tuple(headers), b"".join(chunks))
                            if h.our_state is h11.DONE and h.their_state is h11.DONE:
                                leftover, at_eof = h.trailing_data
                                if not leftover and not at_eof:
                                    h.start_next_cycle()
                                    reusable = True
                            break
                        elif not isinstance(received_event, h11.InformationalResponse):
                            # ConnectionClosed (or PAUSED, which cannot come first)
                            result = self._broken_mid_response()
                            break
                        received_event = h.next_event()
        except h11.RemoteProtocolError as exc:
            if end_of_stream:
                result = self._broken_mid_response()
            else:
                # h11 may quote the offending bytes, and a server may echo our API key.
                detail = redact_secrets(str(exc), request)[:_MAX_DETAIL]
                result = InvalidResponse(
                    message=f"malformed HTTP/1.1 response from {self._origin}: {detail}",
                    status=status,
                )
        except anyio.ClosedResourceError:
            result = (
                closed("H11Transport")
                if self._closed
                else ConnectionFailed(
                    message=f"connection to {self._origin} was closed",
                    request_sent=phase == "read",
                )
            )
        except (anyio.BrokenResourceError, OSError) as exc:
            failure = ConnectionFailed(
                message=f"connection to {self._origin} broke: {_describe(exc)}",
                request_sent=phase == "read",
            )
            result = failure if received else _BrokenBeforeResponse(failure)
        finally:
            self._active.discard(connection)
            if reusable and not self._closed:
                expiry = self._keepalive_expiry
                connection.expires_at = (
                    time.monotonic() + expiry if expiry is not None else float("inf")
                )
                self._idle.append(connection)
            else:
                await channel.aclose()
        if result is None:  # a timeout expired
            if phase == "write":
                message = f"writing the request to {self._origin} took over {self._write_timeout} s"
            else:
                message = f"no response data from {self._origin} within {read_timeout} s"
            return TimedOut(phase=phase, message=message)
        return result

    def _closed_before_response(self) -> _BrokenBeforeResponse:
        return _BrokenBeforeResponse(
            ConnectionFailed(
                message=f"{self._origin} closed the connection before responding",
                request_sent=True,
            )
        )

    def _too_large(self, status: int | None) -> InvalidResponse:
        return InvalidResponse(
            message=(
                f"response from {self._origin} is larger than max_response_bytes="
                f"{self._max_response_bytes}"
            ),
            status=status,
        )

    def _broken_mid_response(self) -> ConnectionFailed:
        return ConnectionFailed(
            message=f"{self._origin} closed the connection before the response was complete",
            request_sent=True,
        )
