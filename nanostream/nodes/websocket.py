"""Websocket nodes: a source that receives messages and a sink that sends them.

Each node either serves an endpoint (``host``, ``port``, ``path``) or connects
to a ``url`` as a client, reconnecting with exponential back-off when the
server goes away. Everything runs in trio (trio-websocket), with no threads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from .._processor import NanoStreamProcessor, Rejected
from .._runtime import node_nursery

logger = logging.getLogger(__name__)

MessageFormat = Literal["text", "bytes", "json"]

#: Messages a listener holds between its connections and the pipeline; when
#: it is full, the connections stop reading, and TCP slows the peers down.
_RECEIVE_BUFFER = 256
#: The most messages a listener hands to the pipeline as one batch.
_MAX_BATCH = 512
#: How long closing a connection politely may take at teardown before the
#: socket is simply closed.
_CLOSE_TIMEOUT = 2.0


def _decode(message: str | bytes, message_format: str) -> Any:
    """A received message as ``message_format`` wants it; ValueError if it cannot be."""
    if message_format == "bytes":
        return message.encode("utf-8") if isinstance(message, str) else message
    text = message.decode("utf-8") if isinstance(message, bytes) else message
    return json.loads(text) if message_format == "json" else text


def _encode(item: Any, message_format: str) -> str | bytes:
    """What is sent for ``item``: a text message, or a binary one for ``bytes``."""
    if message_format == "json":
        return json.dumps(item)
    if message_format == "text":
        return item.decode("utf-8") if isinstance(item, bytes) else str(item)
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    raise TypeError(f"message_format 'bytes' needs bytes items, not {type(item).__name__}")


def _peer(connection: WebSocketConnection) -> str:
    remote = connection.remote
    return f"{remote.address}:{remote.port}" if hasattr(remote, "port") else str(remote)


async def _close_transport(connection: WebSocketConnection) -> None:
    """Close the TCP stream under a client connection.

    trio-websocket (0.12) leaves it open when the server is the one that
    closes the websocket, and the socket would wait for the garbage
    collector; this closes it at once.
    """
    stream = getattr(connection, "_stream", None)
    if stream is not None:
        await trio.aclose_forcefully(stream)


class _NodeNursery:
    """A nursery that stays open from a node's setup to its teardown.

    Servers and connections that must outlive ``setup`` run in it, inside a
    task of the runtime's :func:`node_nursery`: ``open`` starts it,
    ``aclose`` cancels it and waits until every task in it has ended, so
    that teardown can close them in order. An exception that ends it is
    kept in ``failure`` for the node to raise in its own task, where the
    node's error names what it was doing; ``on_exit`` runs when the nursery
    has ended, for whatever reason, to wake the node.
    """

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None
        self.failure: BaseException | None = None
        self._ended = trio.Event()

    async def open(self, name: str, on_exit: Callable[[], None]) -> trio.Nursery:
        opened = trio.Event()
        node_nursery().start_soon(self._run, opened, on_exit, name=name)
        await opened.wait()
        assert self.nursery is not None
        return self.nursery

    async def _run(self, opened: trio.Event, on_exit: Callable[[], None]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                opened.set()
                await trio.sleep_forever()
        except BaseException as error:  # raised in the node's own task instead
            if not isinstance(error, trio.Cancelled):
                self.failure = error
        finally:
            self._ended.set()
            on_exit()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise RuntimeError("the node's websocket tasks failed") from self.failure

    async def aclose(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
            await self._ended.wait()


def _reason(error: BaseException) -> str:
    """Why a connection attempt failed, readably: trio-websocket's HandshakeError
    often says nothing itself and carries the reason as its cause."""
    while not str(error) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}" if str(error) else repr(error)


class _Backoff:
    """Waits between connection attempts, doubling the wait each time, and
    gives up (ConnectionError) after ``max_failures`` failures in a row."""

    def __init__(self, url: str, first: float, longest: float, max_failures: int | None) -> None:
        self.url = url
        self.first = first
        self.longest = longest
        self.max_failures = max_failures
        self.failures = 0
        self.delay = first

    def succeeded(self) -> None:
        self.failures = 0
        self.delay = self.first

    async def lost(self) -> None:
        """After a connection that worked has closed: wait before reconnecting."""
        logger.warning("websocket %s closed; reconnecting in %ss", self.url, self.delay)
        await self._wait()

    async def failed(self, error: BaseException) -> None:
        """After a connection attempt has failed: wait, or give up."""
        self.failures += 1
        if self.max_failures is not None and self.failures >= self.max_failures:
            failures = self.failures
            self.succeeded()  # whoever asks next starts afresh
            raise ConnectionError(
                f"gave up connecting to {self.url} after {failures} failed attempts "
                f"in a row; the last: {_reason(error)}"
            ) from error
        logger.warning(
            "websocket %s: connection attempt failed (%s); retrying in %ss",
            self.url,
            _reason(error),
            self.delay,
        )
        await self._wait()

    async def _wait(self) -> None:
        await trio.sleep(self.delay)
        self.delay = min(2 * self.delay, self.longest)


def _check_endpoint(node: _WebsocketNode) -> None:
    if node.url is None and node.port is None:
        raise ValueError("give either url, to connect to a websocket server, or port, to serve one")
    if node.url is not None and node.port is not None:
        raise ValueError(
            "url and port are both given: give url to connect to a websocket server, "
            "or port (with host and path) to serve one, not both"
        )
    if node.url is not None and urlsplit(node.url).scheme not in ("ws", "wss"):
        raise ValueError(f"url must start with ws:// or wss://, got {node.url!r}")
    if not node.path.startswith("/"):
        raise ValueError(f"path must start with '/', got {node.path!r}")
    if node.reconnect_max_delay < node.reconnect_delay:
        raise ValueError("reconnect_max_delay must not be less than reconnect_delay")


@attrs.define
class _WebsocketNode(NanoStreamProcessor):
    """What both websocket nodes share: the endpoint, the format, reconnecting,
    the nursery their connections live in, and closing them at teardown."""

    url: str | None = attrs.field(
        default=None,
        metadata={
            "description": "Connect to this ws:// or wss:// URL as a client. "
            "Give either url or port."
        },
    )
    host: str = attrs.field(
        default="127.0.0.1",
        metadata={"description": "With port: the interface to serve on (0.0.0.0 for all)."},
    )
    port: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.le(65535)]),
        metadata={
            "description": "Serve a websocket endpoint on this port (0: any free port). "
            "Give either url or port."
        },
    )
    path: str = attrs.field(
        default="/",
        metadata={"description": "With port: the path clients connect to; others get 404."},
    )
    message_format: MessageFormat = attrs.field(
        default="text",
        validator=attrs.validators.in_(("text", "bytes", "json")),
        metadata={
            "description": "text: text messages as str; bytes: binary messages as bytes; "
            "json: each message is one JSON document."
        },
    )
    reconnect_delay: float = attrs.field(
        default=0.5,
        validator=attrs.validators.gt(0),
        metadata={"description": "With url: seconds before the first reconnection attempt."},
    )
    reconnect_max_delay: float = attrs.field(
        default=30.0,
        metadata={"description": "With url: the wait doubles after each failure up to this."},
    )
    max_failed_attempts: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.ge(1)),
        metadata={
            "description": "With url: give up (an error) after this many failed connection "
            "attempts in a row; unset: keep trying."
        },
    )
    connect_timeout: float = attrs.field(
        default=10.0,
        validator=attrs.validators.gt(0),
        metadata={"description": "Seconds an opening handshake may take."},
    )

    _tasks: _NodeNursery | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_tasks"
    )
    _server: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_server")
    _connections: set[WebSocketConnection] = attrs.field(
        factory=set, init=False, repr=False, eq=False, alias="_connections"
    )
    _closing: bool = attrs.field(default=False, init=False, repr=False, eq=False, alias="_closing")

    def __attrs_post_init__(self) -> None:
        _check_endpoint(self)

    @property
    def bound_port(self) -> int:
        """The port being served once set up: ``port``, or the one chosen for 0."""
        if self._server is None:
            raise RuntimeError("not serving: the node has no port or is not set up")
        return self._server.listeners[0].port

    def _backoff(self) -> _Backoff:
        assert self.url is not None
        return _Backoff(
            self.url, self.reconnect_delay, self.reconnect_max_delay, self.max_failed_attempts
        )

    def _open_client(self) -> Any:
        assert self.url is not None
        return open_websocket_url(
            self.url, connect_timeout=self.connect_timeout, disconnect_timeout=_CLOSE_TIMEOUT
        )

    async def _start(self, on_exit: Callable[[], None]) -> trio.Nursery:
        """Open the node's nursery and, with a port, start serving in it."""
        self._closing = False
        self._tasks = _NodeNursery()
        nursery = await self._tasks.open(f"websocket node {type(self).__name__}", on_exit)
        if self.port is not None:
            try:
                self._server = await nursery.start(
                    partial(
                        serve_websocket,
                        self._handle_request,
                        self.host,
                        self.port,
                        None,
                        connect_timeout=self.connect_timeout,
                        disconnect_timeout=_CLOSE_TIMEOUT,
                    )
                )
            except BaseException:
                await self._tasks.aclose()
                raise
        return nursery

    async def _handle_request(self, request: WebSocketRequest) -> None:
        try:
            if urlsplit(request.path).path != self.path:
                await request.reject(404, body=f"serving {self.path} only\n".encode())
                return
            connection = await request.accept()
            self._connections.add(connection)
            try:
                await self._use(connection, _peer(connection))
            finally:
                self._connections.discard(connection)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _use(self, connection: WebSocketConnection, peer: str) -> None:
        """What the node does with an open connection, until it closes."""
        raise NotImplementedError

    async def teardown(self) -> None:
        if self._tasks is None:
            return
        self._closing = True
        # A close frame first, so that peers see a normal closure.
        async with trio.open_nursery() as nursery:
            for connection in list(self._connections):
                nursery.start_soon(_close_politely, connection)
        await self._tasks.aclose()
        self._tasks = None
        self._server = None


async def _close_politely(connection: WebSocketConnection) -> None:
    with trio.move_on_after(_CLOSE_TIMEOUT):
        await connection.aclose(1001, "going away")
    await trio.aclose_forcefully(connection)


@attrs.define
class WebsocketListener(_WebsocketNode):
    """Emits each message received over websockets.

    The messages come from every client of the endpoint it serves
    (``port``), or from the server at ``url``, reconnecting with back-off
    when that server goes away.

    Websocket messages cannot be acknowledged: messages received but not yet
    emitted when the pipeline stops are lost. A message that does not
    decode is rejected: the node's ``on_error`` applies to it.
    """

    _send: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_send")
    _receive: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_receive")
    _gave_up: ConnectionError | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_gave_up"
    )

    async def setup(self) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[str, str | bytes]](
            _RECEIVE_BUFFER
        )
        self._gave_up = None
        nursery = await self._start(on_exit=self._send.close)
        if self.url is not None:
            nursery.start_soon(self._receive_from_server)

    async def _use(self, connection: WebSocketConnection, peer: str) -> None:
        while True:
            await self._send.send((peer, await connection.get_message()))

    async def _receive_from_server(self) -> None:
        backoff = self._backoff()
        try:
            while True:
                try:
                    async with self._open_client() as connection:
                        backoff.succeeded()
                        self._connections.add(connection)
                        try:
                            await self._use(connection, self.url)
                        finally:
                            self._connections.discard(connection)
                            await _close_transport(connection)
                except ConnectionClosed:
                    if self._closing:
                        return
                    await backoff.lost()
                except HandshakeError as error:
                    await backoff.failed(error)
        except ConnectionError as error:
            self._gave_up = error
        finally:
            self._send.close()

    def _decoded(self, received: list[tuple[str, str | bytes]]) -> list[Any]:
        """The messages as items; one that does not decode is rejected, for
        the node's ``on_error`` to handle."""
        items = []
        for peer, message in received:
            try:
                items.append(_decode(message, self.message_format))
            except ValueError as error:
                problem = ValueError(
                    f"a message from {peer} is not valid {self.message_format}: {error}"
                )
                items.append(Rejected(message, problem))
        return items

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        receive = self._receive
        async for first in receive:
            received = [first]
            while len(received) < _MAX_BATCH:
                try:
                    received.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            items = self._decoded(received)
            if items:
                yield items
        # The channel ends only when the node's tasks have stopped on their own.
        if self._gave_up is not None:
            raise self._gave_up
        assert self._tasks is not None
        self._tasks.raise_failure()

    async def teardown(self) -> None:
        await super().teardown()
        if self._receive is not None:
            self._receive.close()


@attrs.define
class WebsocketSender(_WebsocketNode):
    """Sends each item as a websocket message.

    Items go to the server at ``url``, reconnecting with back-off, or to
    every client of the endpoint it serves (``port``).

    An item that cannot be sent to ``url`` (the server stays away for
    ``max_failed_attempts`` attempts) is an error, handled by the node's
    ``on_error``. When serving, an item goes to the clients connected at
    that moment, so with none connected it is sent to nobody; a client that
    is gone, or takes longer than ``send_timeout`` to take a message, is
    disconnected and the others carry on.
    """

    send_timeout: float = attrs.field(
        default=10.0,
        validator=attrs.validators.gt(0),
        metadata={
            "description": "When serving: seconds a client may take to accept one message "
            "before it is disconnected."
        },
    )

    _connection: WebSocketConnection | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_connection"
    )
    _backoff_state: _Backoff | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_backoff_state"
    )

    async def setup(self) -> None:
        self._connection = None
        await self._start(on_exit=lambda: None)
        if self.url is not None:
            self._backoff_state = self._backoff()

    async def _use(self, connection: WebSocketConnection, peer: str) -> None:
        # Reading is what notices pings and closing frames; what peers say is ignored.
        while True:
            await connection.get_message()

    async def process_item(self, message: Any) -> None:
        assert self._tasks is not None
        self._tasks.raise_failure()
        data = _encode(message, self.message_format)
        if self.url is None:
            await self._broadcast(data)
        else:
            await self._send_to_server(data)

    async def _broadcast(self, data: str | bytes) -> None:
        async with trio.open_nursery() as nursery:
            for connection in list(self._connections):
                nursery.start_soon(self._send_or_disconnect, connection, data)

    async def _send_or_disconnect(self, connection: WebSocketConnection, data: str | bytes) -> None:
        with trio.move_on_after(self.send_timeout):
            try:
                await connection.send_message(data)
                return
            except ConnectionClosed:
                pass
        logger.warning("websocket client %s disconnected: gone or too slow", _peer(connection))
        self._connections.discard(connection)
        await trio.aclose_forcefully(connection)

    async def _send_to_server(self, data: str | bytes) -> None:
        backoff = self._backoff_state
        assert backoff is not None
        while True:
            connection = self._connection
            if connection is None or connection.closed:
                if connection is not None:
                    await backoff.lost()
                connection = await self._connect(backoff)
            try:
                await connection.send_message(data)
                return
            except ConnectionClosed:
                continue

    async def _connect(self, backoff: _Backoff) -> WebSocketConnection:
        assert self._tasks is not None and self._tasks.nursery is not None
        while True:
            self._tasks.raise_failure()
            try:
                self._connection = await self._tasks.nursery.start(self._hold_connection)
            except HandshakeError as error:
                await backoff.failed(error)
                continue
            backoff.succeeded()
            return self._connection

    async def _hold_connection(self, task_status: trio.TaskStatus[WebSocketConnection]) -> None:
        """Keep one connection to ``url`` open, reading from it, until it closes."""
        started = False
        try:
            async with self._open_client() as connection:
                self._connections.add(connection)
                try:
                    task_status.started(connection)
                    started = True
                    await self._use(connection, self.url or "")
                finally:
                    self._connections.discard(connection)
                    await _close_transport(connection)
        except (ConnectionClosed, HandshakeError):
            if not started:
                raise
