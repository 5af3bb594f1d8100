"""The byte channels :class:`~cycleguard.transports.h11.H11Transport` talks through.

A channel is one open connection with the operations the transport needs:
``send_within`` and ``receive_within`` (each with its own time limit), ``timeouts``
(the context one exchange runs in), ``readable_while_idle``, ``aclose``, and
``abandon`` (a synchronous close for use from another event loop). When a
limit expires, the channel either returns ``False``/``None`` or cancels out to the
``timeouts()`` context, which swallows that cancellation; the caller treats both
the same way (the exchange ended without a result).

* :class:`AnyioChannel` wraps any :class:`anyio.abc.ByteStream` (from
  :func:`anyio.connect_tcp`); ``timeouts()`` is one anyio cancel scope per exchange,
  whose deadline moves with each operation (a cancel scope is the costliest part of a
  trio request, so there is only one). :func:`trio_channel` is the same with trio's
  own scope and clock, which cost about half as much as anyio's wrappers; it is what
  trio uses.
* :class:`AsyncioChannel` sits directly on an asyncio transport. anyio's own asyncio
  socket stream pauses reading after every ``receive()`` and resumes it before the
  next (two ``epoll_ctl`` calls each time), ends every ``send()`` with a shielded
  checkpoint, and a cancel scope with a moving deadline costs about three times a bare
  timer; for a client whose whole cost is two small round trips per guarded call that
  is a large share of the work. This channel keeps reading enabled (up to a
  high-water mark), arms a plain loop timer for its timeouts, and waits only on asyncio
  futures, so anyio cancel scopes around it cancel it like anything else.

Both raise anyio's exceptions for a broken connection: ``EndOfStream``,
``BrokenResourceError``, ``ClosedResourceError``, or an :class:`OSError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import select
import sys
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio
from anyio.abc import SocketAttribute

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    import trio
    from anyio.abc import ByteStream

__all__ = (
    "AnyioChannel",
    "AsyncioChannel",
    "Channel",
    "connect_asyncio",
    "current_run",
    "running_on_asyncio",
    "running_on_trio",
    "trio_channel",
)

RECEIVE_BYTES: Final = 65536
_READ_HIGH_WATER: Final = 1024 * 1024
"""Buffered bytes above which the socket is not read until ``receive_within`` drains it."""


class Channel(Protocol):
    """One open connection, as the transport uses it."""

    def timeouts(self) -> AbstractContextManager[object]:
        """The context to run one exchange in; it ends quietly when a limit expires."""
        ...

    async def send_within(self, data: bytes, limit: float | None) -> bool:
        """Write ``data`` within ``limit`` seconds; ``False`` (or cancelled) if not."""
        ...

    async def receive_within(self, limit: float | None) -> bytes | None:
        """The next bytes received within ``limit`` seconds; ``None`` (or cancelled) if none.

        Raises:
            anyio.EndOfStream: The peer closed the connection.
        """
        ...

    def readable_while_idle(self) -> bool:
        """Whether the peer closed the connection, or sent bytes nobody asked for."""
        ...

    async def aclose(self) -> None:
        """Close at once, without waiting for the peer. Idempotent."""
        ...

    def abandon(self) -> None:
        """Close without awaiting, from outside the event loop that owns the connection."""
        ...


def running_on_trio() -> bool:
    """Whether the caller runs in a trio task."""
    try:
        from trio.lowlevel import in_trio_task  # optional dependency
    except ImportError:
        return False
    return in_trio_task()


def current_run() -> object:
    """An identity for the running event loop: the asyncio loop, or the trio run's token."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _trio_token()


@functools.cache
def _trio_token_getter() -> Callable[[], object] | None:
    try:
        from trio.lowlevel import current_trio_token  # optional dependency
    except ImportError:  # pragma: no cover - anyio runs only on asyncio and trio
        return None
    return current_trio_token


def _trio_token() -> object:
    getter = _trio_token_getter()
    if getter is None:  # pragma: no cover - anyio runs only on asyncio and trio
        return None
    try:
        return getter()
    except RuntimeError:
        return None


def running_on_asyncio() -> bool:
    """Whether the caller runs in an asyncio task (not trio, not trio in guest mode)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no running asyncio loop in this thread
        return False


# -- any anyio byte stream -----------------------------------------------------------

if sys.platform == "win32":

    def _readable_probe(fileno: int) -> Callable[[], bool]:
        def readable() -> bool:
            try:
                ready, _, _ = select.select((fileno,), (), (), 0)
            except (OSError, ValueError):
                return True
            return bool(ready)

        return readable

else:

    def _readable_probe(fileno: int) -> Callable[[], bool]:
        poller = select.poll()
        poller.register(fileno, select.POLLIN)

        def readable() -> bool:
            try:
                return bool(poller.poll(0))
            except OSError:
                return True

        return readable


@final
class AnyioChannel:
    """A channel over an :class:`anyio.abc.ByteStream` with a socket underneath."""

    __slots__ = ("_raw_socket", "_readable", "_scope", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._scope = anyio.CancelScope()
        # anyio's streams do not read from the socket while no receive() is pending, so
        # a readable socket on an idle connection means end of stream, a reset, or
        # unsolicited bytes. (``extra`` is anyio's typed attribute lookup.)
        self._raw_socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610
        self._readable = _readable_probe(self._raw_socket.fileno())

    def readable_while_idle(self) -> bool:
        """Whether the peer closed the connection, or sent bytes nobody asked for."""
        return self._readable()

    def timeouts(self) -> AbstractContextManager[object]:
        """A fresh cancel scope for one exchange; its deadline expiring ends it."""
        self._scope = anyio.CancelScope()
        return self._scope

    async def send_within(self, data: bytes, limit: float | None) -> bool:
        """Write ``data``; if ``limit`` runs out first, cancel out to ``timeouts()``."""
        self._scope.deadline = math.inf if limit is None else anyio.current_time() + limit
        await self.stream.send(data)
        return True

    async def receive_within(self, limit: float | None) -> bytes | None:
        """The next bytes; if ``limit`` runs out first, cancel out to ``timeouts()``."""
        self._scope.deadline = math.inf if limit is None else anyio.current_time() + limit
        return await self.stream.receive(RECEIVE_BYTES)

    async def aclose(self) -> None:
        """Close at once, without waiting for the peer. Idempotent."""
        await anyio.aclose_forcefully(self.stream)

    def abandon(self) -> None:
        """Close the socket itself, without the event loop that owns the stream."""
        close = getattr(self._raw_socket, "close", None)  # asyncio's socket view has none
        if close is not None:
            close()


def trio_channel(stream: ByteStream) -> Channel:
    """A channel over ``stream`` whose deadlines are trio's own (inside a trio task only).

    Same stream and behaviour as :class:`AnyioChannel`; only the per-exchange cancel
    scope and the clock are trio's, skipping anyio's wrappers around them (a cancel
    scope is the costliest part of a request on trio). Call it only when
    :func:`running_on_trio` says so.
    """
    return _TrioChannel(AnyioChannel(stream))


@final
class _TrioChannel:
    """An :class:`AnyioChannel` with trio's cancel scope and clock for its deadlines."""

    __slots__ = ("_clock", "_inner", "_new_scope", "_scope")

    def __init__(self, inner: AnyioChannel) -> None:
        import trio  # optional dependency, present whenever trio runs

        self._inner = inner
        self._new_scope = trio.CancelScope
        self._clock = trio.current_time
        self._scope = trio.CancelScope()

    def readable_while_idle(self) -> bool:
        """Whether the peer closed the connection, or sent bytes nobody asked for."""
        return self._inner.readable_while_idle()

    def timeouts(self) -> trio.CancelScope:
        """A fresh trio cancel scope for one exchange; its deadline expiring ends it."""
        self._scope = self._new_scope()
        return self._scope

    async def send_within(self, data: bytes, limit: float | None) -> bool:
        """Write ``data``; if ``limit`` runs out first, cancel out to ``timeouts()``."""
        self._scope.deadline = math.inf if limit is None else self._clock() + limit
        await self._inner.stream.send(data)
        return True

    async def receive_within(self, limit: float | None) -> bytes | None:
        """The next bytes; if ``limit`` runs out first, cancel out to ``timeouts()``."""
        self._scope.deadline = math.inf if limit is None else self._clock() + limit
        return await self._inner.stream.receive(RECEIVE_BYTES)

    async def aclose(self) -> None:
        """Close at once, without waiting for the peer. Idempotent."""
        await self._inner.aclose()

    def abandon(self) -> None:
        """Close the socket itself, without the trio run that owns the stream."""
        self._inner.abandon()


# -- asyncio -------------------------------------------------------------------------


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


@final
class _Protocol(asyncio.Protocol):
    """Buffers what the transport delivers and wakes the one waiting reader or writer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.lost = False
        self.error: Exception | None = None
        self.read_waiter: asyncio.Future[bool] | None = None
        self.write_paused = False
        self.drain_waiter: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _READ_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self.wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake_reader()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self.wake_reader()
        self.wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writer()

    def wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def wake_writer(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)


@final
class _NoScope:
    """The ``timeouts()`` context of an asyncio channel, whose limits are loop timers."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_SCOPE: Final = _NoScope()


@final
class AsyncioChannel:
    """A channel directly on an asyncio transport (plain TCP, or asyncio's own TLS)."""

    __slots__ = ("_closed", "_loop", "_protocol", "_transport")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, protocol: _Protocol
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    def timeouts(self) -> _NoScope:
        """Nothing to enter: this channel's limits are loop timers, reported as values."""
        return _NO_SCOPE

    def readable_while_idle(self) -> bool:
        """Whether the peer closed the connection, or sent bytes nobody asked for."""
        protocol = self._protocol
        return protocol.lost or protocol.eof or bool(protocol.chunks)

    async def receive_within(self, limit: float | None) -> bytes | None:
        """The next bytes received; ``None`` if none came within ``limit`` seconds."""
        protocol = self._protocol
        chunks = protocol.chunks
        if not chunks:
            if not (protocol.eof or protocol.lost or self._closed):
                loop = self._loop
                waiter: asyncio.Future[bool] = loop.create_future()
                protocol.read_waiter = waiter
                timer = (
                    None if limit is None else loop.call_at(loop.time() + limit, _expire, waiter)
                )
                try:
                    if not await waiter:
                        return None
                finally:
                    protocol.read_waiter = None
                    if timer is not None:
                        timer.cancel()
            if not chunks:
                if self._closed:
                    raise anyio.ClosedResourceError
                if protocol.error is not None:
                    raise anyio.BrokenResourceError from protocol.error
                raise anyio.EndOfStream
        chunk = chunks.popleft()
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered <= _READ_HIGH_WATER // 2:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send_within(self, data: bytes, limit: float | None) -> bool:
        """Write ``data``; ``False`` if that took longer than ``limit`` seconds.

        Small writes complete at once; only a write beyond the transport's buffer
        limit waits for the peer to read.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if self._protocol.lost:
            raise anyio.BrokenResourceError from self._protocol.error
        self._transport.write(data)
        if self._protocol.write_paused:
            return await self._drain(limit)
        return True

    async def _drain(self, limit: float | None) -> bool:
        protocol = self._protocol
        loop = self._loop
        deadline = None if limit is None else loop.time() + limit
        while protocol.write_paused and not protocol.lost:
            waiter: asyncio.Future[bool] = loop.create_future()
            protocol.drain_waiter = waiter
            timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
            try:
                if not await waiter:
                    return False
            finally:
                protocol.drain_waiter = None
                if timer is not None:
                    timer.cancel()
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.lost:
            raise anyio.BrokenResourceError from protocol.error
        return True

    async def aclose(self) -> None:
        """Close at once, discarding unsent output. Idempotent."""
        if not self._closed:
            self._closed = True
            self.abandon()
            self._protocol.wake_reader()
            self._protocol.wake_writer()

    def abandon(self) -> None:
        """Abort the transport; if its event loop is already closed, there is nothing to do."""
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._transport.abort()


async def connect_asyncio(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> AsyncioChannel:
    """Open a TCP connection (and TLS over it, with ``ssl_context``) on the running loop.

    Raises:
        OSError: The connection or the TLS handshake failed.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        _Protocol,
        host,
        port,
        ssl=ssl_context,
        server_hostname=host if ssl_context is not None else None,
        happy_eyeballs_delay=0.25,
    )
    return AsyncioChannel(loop, transport, protocol)
