"""An HTTP API on loopback for tests and benchmarks: hypercorn serving a
handler, on a free port."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import asynccontextmanager

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@asynccontextmanager
async def api(handler: Callable):
    """A hypercorn server on a free loopback port whose every request is
    ``await handler(method, path, query, body) -> (status, headers, body)``;
    yields its base URL."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, headers, content = await handler(
            scope["method"], scope["path"], scope["query_string"].decode(), body
        )
        if not isinstance(content, bytes):
            content = json.dumps(content).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": content})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        yield binds[0]
        nursery.cancel_scope.cancel()
