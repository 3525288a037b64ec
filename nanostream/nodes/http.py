"""HTTP nodes: a server that takes webhooks in, a client that calls an API per
item or per batch, and a poller that reads a paginated API on an interval.

The server is hypercorn, serving a small ASGI application on trio; the
clients are httpx's async client, which runs on trio through anyio. No
thread is involved.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hmac
import json
import logging
import random
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal
from urllib.parse import quote, urljoin

import attrs
import trio

from .. import node_nursery
from .._params import positive
from .._processor import FailedItems, NanoStreamProcessor, Rejected, WithAck
from . import _jsonable
from ._checkpoint import Checkpoint

logger = logging.getLogger(__name__)

BodyFormat = Literal["json", "text", "bytes"]
_BODY_FORMATS = ("json", "text", "bytes")

#: The most requests the server hands to the pipeline as one batch.
_MAX_BATCH = 512
#: How long a request whose item was cut short by a failing run may take to
#: be told so (503), before its connection is simply closed.
_LAST_ANSWER_TIMEOUT = 1.0
#: HTTP statuses worth sending a request again for: the server is busy,
#: overloaded, or a gateway in front of it could not reach it.
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def _decode_body(body: bytes, body_format: str) -> Any:
    """A request or response body as ``body_format`` says; ValueError if it cannot be."""
    if body_format == "bytes":
        return body
    text = body.decode("utf-8")
    return json.loads(text) if body_format == "json" else text


# -- the server -------------------------------------------------------------


class _Waiting:
    """A request whose item is in the pipeline, waiting for its answer."""

    __slots__ = ("answered", "status")

    def __init__(self) -> None:
        self.answered = trio.Event()
        self.status = 0

    def answer(self, status: int) -> None:
        if not self.answered.is_set():
            self.status = status
            self.answered.set()


async def _respond(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"status": status, "message": message}).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """A request body over ``max_body_size``; its args: why, and the part read."""


class _ClientGone(Exception):
    """The client closed the connection before its body was read."""


@attrs.define
class HttpServer(NanoStreamProcessor):
    """Serves an HTTP endpoint and emits the body of each POST to it (webhooks).

    A request is answered only once its item has been handled by the whole
    pipeline (the runtime's acknowledgement): ``200`` then means it is
    written wherever the sinks write. A sender that retries until it gets
    a 2xx therefore loses nothing to a crash: end-to-end at-least-once.

    * ``503`` with ``Retry-After`` when ``queue_size`` requests are already
      waiting to enter the pipeline (back-pressure), or when the pipeline
      stops before the item was handled.
    * ``400`` for a body that is not valid ``body_format``, which also
      becomes a ``Rejected`` under the node's ``on_error`` (answered once
      that is handled); ``413`` past ``max_body_size`` (rejected too).
    * ``401`` without the right ``Authorization: Bearer`` token, when
      ``bearer_token`` is set; ``404`` for other paths; ``405`` for other
      methods.
    * ``504`` when the item is not handled within ``ack_timeout`` seconds:
      it may still be, so a retry can repeat it.
    * ``GET`` on ``health_path`` answers ``200`` while the node serves.
    """

    port: int = attrs.field(
        validator=[attrs.validators.ge(0), attrs.validators.le(65535)],
        metadata={"description": "The port to serve on (0: any free port)."},
    )
    host: str = attrs.field(
        default="127.0.0.1",
        metadata={"description": "The interface to serve on (0.0.0.0 for all)."},
    )
    path: str = attrs.field(
        default="/", metadata={"description": "The path that takes POSTs; others get 404."}
    )
    body_format: BodyFormat = attrs.field(
        default="json",
        validator=attrs.validators.in_(_BODY_FORMATS),
        metadata={
            "description": "json: each body is one JSON document; text: a UTF-8 str;"
            " bytes: the body as it is."
        },
    )
    max_body_size: int = attrs.field(
        default=1024 * 1024,
        validator=attrs.validators.ge(1),
        metadata={"description": "The largest body taken, in bytes; larger ones get 413."},
    )
    bearer_token: str | None = attrs.field(
        default=None,
        repr=False,
        metadata={
            "description": "Take only requests with 'Authorization: Bearer TOKEN' (others get"
            " 401); write it as ${VARIABLE} to read it from the environment."
        },
    )
    health_path: str = attrs.field(
        default="/health",
        metadata={"description": "GET here answers 200 while serving."},
    )
    queue_size: int = attrs.field(
        default=1000,
        validator=attrs.validators.ge(1),
        metadata={
            "description": "How many requests may wait to enter the pipeline; past that,"
            " 503 with Retry-After."
        },
    )
    retry_after: int = attrs.field(
        default=1,
        validator=attrs.validators.ge(0),
        metadata={"description": "Seconds a 503 answer tells senders to wait (Retry-After)."},
    )
    ack_timeout: float = attrs.field(
        default=30.0,
        validator=positive,
        metadata={
            "description": "Seconds a request waits for its item to be handled before it is"
            " answered 504."
        },
    )

    _send: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_send")
    _receive: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_receive")
    _waiting: set[_Waiting] = attrs.field(
        factory=set, init=False, repr=False, eq=False, alias="_waiting"
    )
    _stop_serving: Any = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_stop_serving"
    )
    _served: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_served")
    _binds: list[str] = attrs.field(factory=list, init=False, repr=False, eq=False, alias="_binds")
    _closing: bool = attrs.field(default=False, init=False, repr=False, eq=False, alias="_closing")

    def __attrs_post_init__(self) -> None:
        for name in ("path", "health_path"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"{name} must start with '/', got {getattr(self, name)!r}")
        if self.path == self.health_path:
            raise ValueError(f"path and health_path are both {self.path!r}")

    @property
    def bound_port(self) -> int:
        """The port being served once set up: ``port``, or the one chosen for 0."""
        if not self._binds:
            raise RuntimeError("not serving: the node is not set up")
        return int(self._binds[0].rsplit(":", 1)[1])

    async def setup(self) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        self._send, self._receive = trio.open_memory_channel[Any](self.queue_size)
        self._waiting = set()
        self._closing = False
        self._stop_serving = trio.Event()
        self._served = trio.Event()
        config = Config()
        config.bind = [
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        ]
        config.accesslog = None
        config.errorlog = logging.getLogger("nanostream.nodes.http.server")
        config.graceful_timeout = 1.0

        async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve(
                    self._app,  # type: ignore[arg-type]
                    config,
                    shutdown_trigger=self._stop_serving.wait,
                    task_status=task_status,
                )
            finally:
                self._served.set()

        self._binds = await node_nursery().start(run_server)
        logger.info(
            "serving POST %s on %s",
            self.path,
            ", ".join(self._binds),
            extra={"event": "serving", "port": self.bound_port},
        )

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == self.health_path and method in ("GET", "HEAD"):
            if self._closing:
                await _respond(send, 503, "stopping")
            else:
                await _respond(send, 200, "serving")
            return
        if path != self.path:
            await _respond(send, 404, f"POST to {self.path}")
            return
        if method != "POST":
            await _respond(send, 405, "POST only", [(b"allow", b"POST")])
            return
        headers = dict(scope["headers"])
        if not self._authorised(headers.get(b"authorization", b"")):
            client = _client(scope)
            logger.warning("HTTP request from %s refused: no valid bearer token", client)
            await _respond(
                send, 401, "a valid bearer token is required", [(b"www-authenticate", b"Bearer")]
            )
            return
        await self._take(scope, receive, send, headers)

    def _authorised(self, authorization: bytes) -> bool:
        if self.bearer_token is None:
            return True
        expected = b"Bearer " + self.bearer_token.encode()
        return hmac.compare_digest(authorization, expected)

    async def _take(self, scope: dict[str, Any], receive: Any, send: Any, headers: dict) -> None:
        where = f"POST {self.path} from {_client(scope)}"
        try:
            body = await self._body(receive, headers)
        except _ClientGone:
            return
        except _TooLarge as error:
            rejection = ValueError(f"{where}: {error}")
            await self._enter(send, Rejected(error.args[1], rejection), 413, str(error))
            return
        try:
            item: Any = _decode_body(body, self.body_format)
        except ValueError as error:
            why = f"the body is not valid {self.body_format}: {error}"
            await self._enter(send, Rejected(body, ValueError(f"{where}: {why}")), 400, why)
            return
        await self._enter(send, item, 200, "handled")

    async def _body(self, receive: Any, headers: dict) -> bytes:
        limit = self.max_body_size
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge(f"the body of {int(declared)} bytes is over {limit} bytes", b"")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"the body is over {limit} bytes", b"".join(chunks)[:limit])
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _enter(self, send: Any, item: Any, status: int, message: str) -> None:
        """Put ``item`` into the pipeline, wait until it is handled, answer."""
        if self._closing:
            await self._busy(send, "the pipeline is stopping")
            return
        waiting = _Waiting()
        done = lambda: waiting.answer(status)  # noqa: E731 - the acknowledgement
        entry = (
            Rejected(item.raw, item.error, done)
            if isinstance(item, Rejected)
            else (WithAck(item, done))
        )
        try:
            self._send.send_nowait((entry, waiting))
        except (trio.WouldBlock, trio.BrokenResourceError):
            await self._busy(send, "the pipeline is full")
            return
        self._waiting.add(waiting)
        try:
            with trio.move_on_after(self.ack_timeout):
                await waiting.answered.wait()
        except trio.Cancelled:
            # The run is failing or cancelled: tell the sender to retry, if
            # the connection still takes it, before letting go.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + _LAST_ANSWER_TIMEOUT
                with contextlib.suppress(Exception):
                    await self._busy(send, "the pipeline stopped before handling it")
            raise
        finally:
            self._waiting.discard(waiting)
        if waiting.status == 0:
            await _respond(send, 504, "not handled in time; it may still be")
        elif waiting.status == 503:
            await self._busy(send, "the pipeline stopped before handling it")
        else:
            await _respond(send, waiting.status, message)

    async def _busy(self, send: Any, why: str) -> None:
        await _respond(send, 503, why, [(b"retry-after", str(self.retry_after).encode())])

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        receive = self._receive
        try:
            async for first in receive:
                batch = [first[0]]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait()[0])
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                yield batch
        finally:
            # The pipeline is stopping: requests that never entered it are
            # told to come back, and no more are taken.
            self._closing = True
            while True:
                try:
                    _, waiting = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                waiting.answer(503)
            receive.close()

    async def teardown(self) -> None:
        # Runs once the rest of the pipeline is done: every item handled has
        # been answered; the others never will be, so they are told to retry.
        self._closing = True
        if self._receive is not None:
            self._receive.close()
        for waiting in list(self._waiting):
            waiting.answer(503)
        if self._stop_serving is not None:
            self._stop_serving.set()
            await self._served.wait()


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


# -- clients ----------------------------------------------------------------


def _retry_after(response: Any) -> float | None:
    """Seconds to wait that ``Retry-After`` asks for (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpStatusError(Exception):
    """An HTTP request was answered with an error status, after any retries."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"{method} {url}: HTTP {status}: {body[:200]}")


#: The parameters of timeouts and retries that both client nodes take:
#: name -> (default, validator, description).
_RETRY_PARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "timeout": (10.0, positive, "Seconds one request may take, connecting included."),
    "retries": (
        3,
        attrs.validators.ge(0),
        "How often to send a request again after a connection error, a timeout, 429 or"
        " a 5xx, before it fails.",
    ),
    "retry_delay": (
        0.5,
        positive,
        "Seconds of the first wait before a retry; each next wait may be twice as long"
        " (full jitter: a random part of it).",
    ),
    "max_retry_delay": (
        30.0,
        positive,
        "The longest wait before a retry, Retry-After included, in seconds.",
    ),
}


def _retry_field(name: str) -> Any:
    """The client parameter ``name``, declared once for both client nodes."""
    default, validator, description = _RETRY_PARAMETERS[name]
    return attrs.field(default=default, validator=validator, metadata={"description": description})


def _headers_field() -> Any:
    return attrs.field(
        factory=dict,
        repr=False,
        metadata={
            "description": "Headers sent with every request; write secrets as ${VARIABLE}"
            " to read them from the environment."
        },
    )


async def _send_with_retries(client: Any, node: Any, method: str, url: str, **request: Any) -> Any:
    """Send a request with ``node``'s retry policy; the successful response.

    Connection errors, timeouts, 429 and 5xx answers are retried up to
    ``node.retries`` times, waiting a random time up to ``retry_delay *
    2**attempt`` (full jitter, so that many clients do not retry in step),
    or what ``Retry-After`` asks for, never more than ``max_retry_delay``.
    Raises :class:`HttpStatusError` for an error status, or httpx's
    ``TransportError`` for a connection that could not be made.
    """
    import httpx

    attempt = 0
    while True:
        wait = None
        try:
            response = await client.request(method, url, **request)
        except httpx.TransportError:
            if attempt >= node.retries:
                raise
        else:
            if response.status_code < 400:
                return response
            if response.status_code not in _RETRYABLE or attempt >= node.retries:
                raise HttpStatusError(method, url, response.status_code, response.text)
            wait = _retry_after(response)
        if wait is None:
            wait = random.uniform(0, node.retry_delay * 2**attempt)
        attempt += 1
        await trio.sleep(min(wait, node.max_retry_delay))


@functools.lru_cache(maxsize=64)
def _template_fields(template: str) -> tuple[str, ...]:
    """The names of the ``{fields}`` of a URL template (parsed once per template)."""
    return tuple(
        field for _, field, _, _ in string.Formatter().parse(template) if field is not None
    )


def _validate_url_template(_: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        fields = _template_fields(value)
    except ValueError as error:
        raise ValueError(f"{attribute.name} {value!r} is not a valid template: {error}") from None
    if not all(field.isidentifier() for field in fields):
        raise ValueError(f"{attribute.name} {value!r}: name each field, as {{id}} or {{item}}")
    if not value.split("{", 1)[0].startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must start with http:// or https://, got {value!r}")


def _fill(template: str, item: Any) -> str:
    """The URL for ``item``: ``{item}`` is the item, ``{name}`` a field of a dict item."""
    fields = item if isinstance(item, dict) else {}
    values = {}
    for key in _template_fields(template):
        if key == "item":
            values[key] = quote(str(item), safe="")
        elif key in fields:
            values[key] = quote(str(fields[key]), safe="")
        else:
            raise ValueError(f"the URL template needs {{{key}}}, which the item does not have")
    return template.format_map(values)


def _request_body(item: Any, body: str) -> dict[str, Any]:
    if body == "none":
        return {}
    if body == "json":
        return {
            "content": _jsonable.dumps(item).encode("utf-8"),
            "headers": {"content-type": "application/json"},
        }
    if isinstance(item, bytes):
        return {"content": item}
    return {"content": str(item).encode("utf-8")}


@attrs.define
class HttpClient(NanoStreamProcessor):
    """Calls an HTTP endpoint for each item (or each batch), and emits the answers.

    The URL is a template: ``{item}`` is the item, ``{name}`` a field of a
    dict item (``https://api.example.com/users/{id}``), each URL-quoted.
    The item is sent as the body (``body``), or a batch as one JSON array
    (``per_batch``). With ``response: none`` it is a sink; otherwise it
    emits each answer's body, decoded.

    Connection errors, timeouts, ``429`` and ``5xx`` answers are retried
    with jittered exponential back-off, honouring ``Retry-After``; other
    ``4xx`` answers fail at once. Items that still fail are reported with
    ``FailedItems``, so the node's ``on_error`` applies to them alone while
    the rest of their batch goes on. Up to ``concurrency`` requests are in
    flight at once; the answers keep the order of the items.
    """

    url: str = attrs.field(
        validator=_validate_url_template,
        metadata={"description": "The URL, a template of {item} or {field} of a dict item."},
    )
    method: str = attrs.field(
        default="POST",
        converter=str.upper,
        validator=attrs.validators.in_(("GET", "POST", "PUT", "PATCH", "DELETE")),
        metadata={"description": "The HTTP method."},
    )
    headers: dict[str, str] = _headers_field()  # noqa: RUF009 - an attrs field
    body: Literal["json", "text", "bytes", "none"] = attrs.field(
        default="json",
        validator=attrs.validators.in_(("json", "text", "bytes", "none")),
        metadata={
            "description": "How the item is sent: json, text (str(item)), bytes, or none"
            " (no body, as for GET)."
        },
    )
    per_batch: bool = attrs.field(
        default=False,
        metadata={"description": "Send a whole batch as one JSON array, in one request."},
    )
    response: Literal["none", "json", "text", "bytes"] = attrs.field(
        default="none",
        validator=attrs.validators.in_(("none", "json", "text", "bytes")),
        metadata={"description": "What to emit: nothing (a sink), or each answer's body."},
    )
    concurrency: int = attrs.field(
        default=8,
        validator=attrs.validators.ge(1),
        metadata={"description": "How many requests may be in flight at once."},
    )
    timeout: float = _retry_field("timeout")
    retries: int = _retry_field("retries")
    retry_delay: float = _retry_field("retry_delay")
    max_retry_delay: float = _retry_field("max_retry_delay")

    _client: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_client")

    def __attrs_post_init__(self) -> None:
        if self.per_batch and self.body != "json":
            raise ValueError("per_batch sends a JSON array: it needs body: json")

    async def setup(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            headers=self.headers,
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    async def _call(self, url: str, item: Any) -> Any:
        response = await _send_with_retries(
            self._client, self, self.method, url, **_request_body(item, self.body)
        )
        if self.response == "none":
            return None
        return _decode_body(response.content, self.response)

    async def process_batch(self, messages: list[Any]) -> list[Any]:
        if self.per_batch:
            return [await self._call(self.url, messages)]
        results: list[Any] = [None] * len(messages)
        errors: dict[int, Exception] = {}
        limit = trio.Semaphore(self.concurrency)

        async def call(index: int, item: Any) -> None:
            async with limit:
                try:
                    results[index] = await self._call(_fill(self.url, item), item)
                except Exception as error:
                    errors[index] = error

        async with trio.open_nursery() as nursery:
            for index, item in enumerate(messages):
                nursery.start_soon(call, index, item)
        if errors:
            raise FailedItems(errors, [r for i, r in enumerate(results) if i not in errors])
        return results

    async def teardown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()


def _lookup(document: Any, path: str | None) -> Any:
    """The value at a dotted ``path`` (``data.items``) in a JSON document; None if absent."""
    if path is None:
        return document
    for part in path.split("."):
        if isinstance(document, dict):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
    return document


@attrs.define
class HttpPoller(NanoStreamProcessor):
    """Calls an API on an interval and emits the items of each answer,
    following its pagination.

    Each round starts from the saved position and requests page after page
    until there is no next one, then waits ``interval`` seconds (or ends,
    with ``once``). ``items_field`` is where the list of items is in the
    JSON answer (a dotted path; unset: the answer is the list).
    ``pagination`` says how the next page is found:

    * ``next_link``: a URL at ``next_field`` in the answer, or the
      ``Link: <...>; rel="next"`` header when ``next_field`` is unset;
    * ``cursor``: a value at ``next_field``, sent back as the query
      parameter ``cursor_param``; the last cursor is kept after a round,
      so the next round asks only for what came after it;
    * ``page``: the query parameter ``page_param`` counts from
      ``first_page`` until a page has no items;
    * ``none``: one request per round.

    Items are emitted with acknowledgements, and the position (the next
    page's link, cursor or number) is saved to ``state_path`` only once
    every item before it is handled, so a pipeline stopped or killed at
    any moment starts again where it was: items may repeat, none is lost.
    A request that still fails after ``retries`` is logged and tried again
    next round; an answer that is not JSON, or a ``4xx`` other than
    ``429``, is an error of the node.
    """

    url: str = attrs.field(
        validator=_validate_url_template,
        metadata={"description": "The URL of the first page."},
    )
    interval: float = attrs.field(
        default=60.0,
        validator=positive,
        metadata={"description": "Seconds between the end of one round and the next."},
    )
    once: bool = attrs.field(
        default=False,
        metadata={"description": "Make one round (every page once), then end."},
    )
    method: str = attrs.field(
        default="GET",
        converter=str.upper,
        validator=attrs.validators.in_(("GET", "POST")),
        metadata={"description": "The HTTP method."},
    )
    headers: dict[str, str] = _headers_field()  # noqa: RUF009 - an attrs field
    params: dict[str, str] = attrs.field(
        factory=dict, metadata={"description": "Query parameters sent with every request."}
    )
    items_field: str | None = attrs.field(
        default=None,
        metadata={
            "description": "Dotted path of the list of items in the JSON answer; unset: the"
            " answer is the list (an object is one item)."
        },
    )
    pagination: Literal["none", "next_link", "cursor", "page"] = attrs.field(
        default="none",
        validator=attrs.validators.in_(("none", "next_link", "cursor", "page")),
        metadata={"description": "How the next page is found: none, next_link, cursor, page."},
    )
    next_field: str | None = attrs.field(
        default=None,
        metadata={
            "description": "Dotted path of the next page's URL (next_link; unset: the Link"
            " header) or cursor (cursor) in the JSON answer."
        },
    )
    cursor_param: str = attrs.field(
        default="cursor",
        metadata={"description": "With cursor: the query parameter the cursor is sent as."},
    )
    page_param: str = attrs.field(
        default="page",
        metadata={"description": "With page: the query parameter of the page number."},
    )
    first_page: int = attrs.field(
        default=1, metadata={"description": "With page: the number of the first page."}
    )
    state_path: str | None = attrs.field(
        default=None,
        metadata={
            "description": "A file that keeps the position across restarts; unset: each run"
            " starts from the first page."
        },
    )
    timeout: float = _retry_field("timeout")
    retries: int = _retry_field("retries")
    retry_delay: float = _retry_field("retry_delay")
    max_retry_delay: float = _retry_field("max_retry_delay")

    _checkpoint: Checkpoint | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_checkpoint"
    )

    def __attrs_post_init__(self) -> None:
        if self.pagination == "cursor" and self.next_field is None:
            raise ValueError("pagination: cursor needs next_field, where the cursor is")
        if _template_fields(self.url):
            raise ValueError(f"url {self.url!r} has a {{field}}; the poller's URL is fixed")

    def _request(self, position: Any) -> tuple[str, dict[str, Any]]:
        """The URL and query parameters of the page at ``position``."""
        params = dict(self.params)
        if position is None:
            if self.pagination == "page":
                params[self.page_param] = str(self.first_page)
            return self.url, params
        if self.pagination == "next_link":
            return position, {}
        if self.pagination == "cursor":
            params[self.cursor_param] = str(position)
        elif self.pagination == "page":
            params[self.page_param] = str(position)
        return self.url, params

    def _next(self, position: Any, url: str, response: Any, document: Any, count: int) -> Any:
        """The position of the page after this one, or ``None`` if there is none."""
        if self.pagination == "next_link":
            link = (
                _lookup(document, self.next_field)
                if self.next_field is not None
                else response.links.get("next", {}).get("url")
            )
            return urljoin(url, link) if link else None
        if self.pagination == "cursor":
            # A cursor that does not move, or a page with no items, is the end.
            cursor = _lookup(document, self.next_field)
            return cursor if count and cursor not in (None, "", position) else None
        if self.pagination == "page" and count:
            current = self.first_page if position is None else int(position)
            return current + 1
        return None

    async def generate_batches(self) -> AsyncIterator[list[WithAck]]:
        import httpx

        checkpoint = self._checkpoint = Checkpoint(self.state_path)
        position = await trio.to_thread.run_sync(checkpoint.load)
        async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout) as client:
            while True:
                position = checkpoint.reached
                while True:
                    url, params = self._request(position)
                    try:
                        # No params at all for a next link: httpx would drop its query.
                        response = await _send_with_retries(
                            client, self, self.method, url, params=params or None
                        )
                    except (httpx.TransportError, HttpStatusError) as error:
                        if isinstance(error, HttpStatusError) and error.status not in _RETRYABLE:
                            raise
                        logger.warning("%s; trying again in %ss", error, self.interval)
                        break
                    try:
                        document = response.json()
                    except ValueError as error:
                        why = f"{self.method} {response.url}: the answer is not JSON: {error}"
                        raise ValueError(why) from None
                    items = _lookup(document, self.items_field)
                    if items is None:
                        items = []
                    elif not isinstance(items, list):
                        items = [items]
                    following = self._next(
                        position, str(response.url), response, document, len(items)
                    )
                    # Where the next round starts once these items are handled:
                    # the next page, or after the last cursor, or the first page.
                    kept = following
                    if following is None:
                        kept = position if self.pagination == "cursor" else None
                    acks = checkpoint.group(kept, len(items))
                    if items:
                        yield [WithAck(item, ack) for item, ack in zip(items, acks, strict=True)]
                    await checkpoint.save()
                    if following is None:
                        break
                    position = following
                if self.once:
                    return
                await checkpoint.wait(self.interval)

    async def teardown(self) -> None:
        # After the rest of the pipeline: every item handled is acknowledged.
        if self._checkpoint is not None:
            with trio.CancelScope(shield=True):
                await self._checkpoint.save()
