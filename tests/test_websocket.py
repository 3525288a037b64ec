"""Websocket nodes against real trio-websocket peers on loopback."""

from __future__ import annotations

import json
import socket
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)

import nanostream as ns
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.websocket import WebsocketListener, WebsocketSender, _close_transport

#: A safety net against a hang, never a timing assertion.
PATIENCE = 30


@asynccontextmanager
async def running(graph: ns.NanoStreamGraph):
    """Run ``graph`` in the background; stop it (draining) on leaving."""
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        yield run
        run.stop()


def listener_graph(listener: WebsocketListener, **options):
    send, receive = trio.open_memory_channel(1000)
    graph = ns.NanoStreamGraph("listen")
    graph.add("listener", listener, **options)
    graph.add("sink", ns.ChannelSink(send), parents=["listener"])
    return graph, receive


def sender_graph(sender: WebsocketSender, **options):
    send, receive = trio.open_memory_channel(1000)
    graph = ns.NanoStreamGraph("send")
    graph.add("source", ns.ChannelSource(receive))
    graph.add("sender", sender, parents=["source"], **options)
    return graph, send


@asynccontextmanager
async def client(url: str, **options):
    """A websocket client of ``url`` whose socket is closed however it ends."""
    ws = None
    try:
        async with open_websocket_url(url, **options) as ws:
            yield ws
    finally:
        if ws is not None:
            await _close_transport(ws)


async def take(receive: trio.MemoryReceiveChannel, count: int) -> list:
    return [await receive.receive() for _ in range(count)]


@asynccontextmanager
async def serving(handler):
    """A trio-websocket server on a free loopback port; yields its ws:// URL."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/feed"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- listener, serving


async def test_listener_emits_what_several_clients_send():
    listener = WebsocketListener(port=0, path="/in")
    graph, received = listener_graph(listener)
    with trio.fail_after(PATIENCE):
        async with running(graph):
            url = f"ws://127.0.0.1:{listener.bound_port}/in"

            async def send_from(name: str) -> None:
                async with client(url) as ws:
                    for n in range(50):
                        await ws.send_message(f"{name}-{n}")

            async with trio.open_nursery() as nursery:
                for name in ("a", "b", "c"):
                    nursery.start_soon(send_from, name)
            items = await take(received, 150)
    for name in ("a", "b", "c"):
        assert [i for i in items if i.startswith(f"{name}-")] == [f"{name}-{n}" for n in range(50)]


async def test_listener_answers_404_on_other_paths():
    listener = WebsocketListener(port=0, path="/in")
    graph, _ = listener_graph(listener)
    with trio.fail_after(PATIENCE):
        async with running(graph):
            stream = await trio.open_tcp_stream("127.0.0.1", listener.bound_port)
            async with stream:
                await stream.send_all(
                    b"GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                answer = await stream.receive_some()
    assert answer.startswith(b"HTTP/1.1 404 ")


async def test_listener_keeps_serving_when_a_client_vanishes_mid_stream():
    listener = WebsocketListener(port=0)
    graph, received = listener_graph(listener)
    with trio.fail_after(PATIENCE):
        async with running(graph):
            url = f"ws://127.0.0.1:{listener.bound_port}/"
            async with client(url) as steady, client(url) as vanishing:
                await vanishing.send_message("last words")
                assert await take(received, 1) == ["last words"]
                await trio.aclose_forcefully(vanishing)
                for n in range(20):
                    await steady.send_message(str(n))
                assert await take(received, 20) == [str(n) for n in range(20)]
            await trio.testing.wait_all_tasks_blocked()
            assert listener._connections == set()


async def test_listener_formats():
    for message_format, expected in [
        ("text", ["text", "binary"]),
        ("bytes", [b"text", b"binary"]),
        ("json", [{"n": 1}, [2, 3]]),
    ]:
        listener = WebsocketListener(port=0, message_format=message_format)
        graph, received = listener_graph(listener)
        with trio.fail_after(PATIENCE):
            async with running(graph), client(f"ws://127.0.0.1:{listener.bound_port}/") as ws:
                if message_format == "json":
                    await ws.send_message('{"n": 1}')
                    await ws.send_message(b"[2, 3]")
                else:
                    await ws.send_message("text")
                    await ws.send_message(b"binary")
                assert await take(received, 2) == expected, message_format


async def test_listener_fails_on_a_message_that_is_not_json():
    listener = WebsocketListener(port=0, message_format="json")
    graph, received = listener_graph(listener)
    with trio.fail_after(PATIENCE), pytest.RaisesGroup(ns.NodeError) as failed:
        async with running(graph), client(f"ws://127.0.0.1:{listener.bound_port}/") as ws:
            await ws.send_message('{"fine": true}')
            await ws.send_message("{not json")
            await trio.sleep_forever()
    (error,) = failed.value.exceptions
    assert error.node == "listener"
    message = str(error)
    assert "a message from 127.0.0.1:" in message
    assert "is not valid json" in message
    assert "'{not json'" in message
    assert received.receive_nowait() == {"fine": True}


async def test_listener_skips_messages_that_are_not_json_when_asked(caplog):
    listener = WebsocketListener(port=0, message_format="json")
    graph, received = listener_graph(listener, on_error="skip")
    with trio.fail_after(PATIENCE):
        async with running(graph), client(f"ws://127.0.0.1:{listener.bound_port}/") as ws:
            for message in ("1", "two", "3"):
                await ws.send_message(message)
            assert await take(received, 2) == [1, 3]
    assert "is not valid json" in caplog.text
    assert "'two'" in caplog.text


async def test_stopping_the_graph_closes_the_clients_normally():
    listener = WebsocketListener(port=0)
    graph, _ = listener_graph(listener)
    with trio.fail_after(PATIENCE):
        async with running(graph) as run, client(f"ws://127.0.0.1:{listener.bound_port}/") as ws:
            await trio.testing.wait_all_tasks_blocked()
            run.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1001
    assert run.stats["listener"].state == "finished"


# ---------------------------------------------------------------- listener, client


async def _close_politely(ws: WebSocketConnection) -> None:
    await ws.aclose()


@pytest.mark.parametrize(
    "drop", [_close_politely, _close_transport], ids=["close handshake", "connection cut"]
)
async def test_listener_client_reconnects_when_the_server_closes_mid_stream(autojump_clock, drop):
    connections = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal connections
        ws = await request.accept()
        connections += 1
        first = 3 * (connections - 1)
        for n in range(first, first + 3):
            await ws.send_message(str(n))
        if connections < 3:
            await drop(ws)
        else:
            await trio.sleep_forever()

    async with serving(handler) as url:
        listener = WebsocketListener(url=url, message_format="json", reconnect_delay=1)
        graph, received = listener_graph(listener)
        with trio.fail_after(PATIENCE):
            async with running(graph):
                assert await take(received, 9) == list(range(9))
    assert connections == 3


async def unused_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    return port


async def test_listener_client_backs_off_exponentially_then_gives_up(autojump_clock, caplog):
    url = f"ws://127.0.0.1:{await unused_port()}/feed"
    listener = WebsocketListener(
        url=url, reconnect_delay=1, reconnect_max_delay=3, max_failed_attempts=5
    )
    graph, _ = listener_graph(listener)
    started = trio.current_time()
    with trio.fail_after(PATIENCE), pytest.raises(ns.NodeError) as failed:
        await ns.run_graph(graph)
    assert trio.current_time() - started == pytest.approx(1 + 2 + 3 + 3)
    waits = [r.getMessage().rpartition(" ")[2] for r in caplog.records if "retrying" in r.msg]
    assert waits == ["1s", "2s", "3s", "3s"]
    assert failed.value.node == "listener"
    assert isinstance(failed.value.error, ConnectionError)
    assert f"gave up connecting to {url} after 5 failed attempts" in str(failed.value)
    assert "the last: OSError: all attempts to connect to 127.0.0.1:" in str(failed.value)


async def test_listener_client_stops_promptly_and_closes_its_connection():
    closed = trio.Event()
    close_codes = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as error:
            close_codes.append(error.reason.code)
            closed.set()

    async with serving(handler) as url:
        listener = WebsocketListener(url=url)
        graph, _ = listener_graph(listener)
        with trio.fail_after(PATIENCE):
            async with running(graph):
                while not listener._connections:
                    await trio.testing.wait_all_tasks_blocked()
            await closed.wait()
    assert close_codes == [1001]


# ---------------------------------------------------------------- sender, serving


async def connected_clients(sender: WebsocketSender, count: int, nursery, **options):
    """``count`` clients of ``sender``, each collecting what it receives."""
    url = f"ws://127.0.0.1:{sender.bound_port}/"
    clients = []
    for _ in range(count):
        ws = await nursery.start(partial(hold_client, url, **options))
        clients.append(ws)
    await trio.testing.wait_all_tasks_blocked()
    assert len(sender._connections) == count
    return clients


async def hold_client(url, *, task_status, **options):
    async with client(url, **options) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_sender_broadcasts_and_outlives_a_client_that_dies():
    sender = WebsocketSender(port=0, message_format="json")
    graph, items = sender_graph(sender)
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as clients_nursery:
            async with running(graph) as run:
                steady, dying = await connected_clients(sender, 2, clients_nursery)
                for n in range(5):
                    await items.send({"n": n})
                assert [json.loads(await steady.get_message()) for _ in range(5)] == [
                    {"n": n} for n in range(5)
                ]
                assert [json.loads(await dying.get_message()) for _ in range(5)] == [
                    {"n": n} for n in range(5)
                ]
                await trio.aclose_forcefully(dying)
                for n in range(5, 100):
                    await items.send({"n": n})
                assert [json.loads(await steady.get_message()) for _ in range(95)] == [
                    {"n": n} for n in range(5, 100)
                ]
                assert len(sender._connections) == 1
            clients_nursery.cancel_scope.cancel()
    assert run.stats["sender"].received == 100
    assert run.stats["sender"].errors == 0


async def stalled_client(port: int, nursery) -> trio.SocketStream:
    """A client that reads nothing after its handshake, through a small receive
    buffer, so that what is sent to it soon fills every buffer on the way."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await wrap_client_stream(nursery, stream, "127.0.0.1", "/", message_queue_size=0)
    return stream


async def test_sender_disconnects_a_client_too_slow_to_take_messages():
    sender = WebsocketSender(port=0, message_format="bytes", send_timeout=3)
    graph, items = sender_graph(sender)
    payload = bytes(128 * 1024)
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as clients_nursery:
            async with running(graph) as run:
                (reader,) = await connected_clients(sender, 1, clients_nursery)
                stalled = await stalled_client(sender.bound_port, clients_nursery)
                await trio.testing.wait_all_tasks_blocked()
                assert len(sender._connections) == 2
                received = 0

                async def read_all() -> None:
                    nonlocal received
                    for _ in range(64):
                        assert await reader.get_message() == payload
                        received += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all)
                    for _ in range(64):
                        await items.send(payload)
                assert received == 64
                assert len(sender._connections) == 1
                await stalled.aclose()
            clients_nursery.cancel_scope.cancel()
    assert run.stats["sender"].errors == 0


async def test_sender_with_nobody_connected_sends_to_nobody():
    sender = WebsocketSender(port=0)
    graph, items = sender_graph(sender)
    with trio.fail_after(PATIENCE):
        async with running(graph) as run:
            await items.send("into the void")
            url = f"ws://127.0.0.1:{sender.bound_port}/"
            async with client(url) as ws:
                await trio.testing.wait_all_tasks_blocked()
                await items.send("heard")
                assert await ws.get_message() == "heard"
    assert run.stats["sender"].received == 2


async def test_sender_formats_and_a_bytes_sender_given_text():
    for message_format, item, expected in [
        ("text", 5, "5"),
        ("text", b"caf\xc3\xa9", "café"),
        ("json", {"a": [1, None]}, '{"a": [1, null]}'),
        ("bytes", b"\x00\x01", b"\x00\x01"),
    ]:
        sender = WebsocketSender(port=0, message_format=message_format)
        graph, items = sender_graph(sender)
        with trio.fail_after(PATIENCE):
            async with running(graph), client(f"ws://127.0.0.1:{sender.bound_port}/") as ws:
                await trio.testing.wait_all_tasks_blocked()
                await items.send(item)
                assert await ws.get_message() == expected, message_format

    sender = WebsocketSender(port=0, message_format="bytes")
    graph, items = sender_graph(sender)
    with trio.fail_after(PATIENCE), pytest.RaisesGroup(ns.NodeError) as failed:
        async with running(graph):
            await items.send("not bytes")
            await trio.sleep_forever()
    (error,) = failed.value.exceptions
    assert error.node == "sender"
    assert "message_format 'bytes' needs bytes items, not str" in str(error)


# ---------------------------------------------------------------- sender, client


async def test_sender_client_reconnects_when_the_server_closes_mid_stream(autojump_clock):
    received = []
    connections = 0
    first_closed = trio.Event()
    all_received = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        nonlocal connections
        ws = await request.accept()
        connections += 1
        while True:
            try:
                received.append(await ws.get_message())
            except ConnectionClosed:
                return
            if len(received) == 10:
                all_received.set()
            if len(received) == 3:
                await ws.aclose()  # returns once the client has answered the close
                first_closed.set()
                return

    async with serving(handler) as url:
        sender = WebsocketSender(url=url, reconnect_delay=1)
        graph, items = sender_graph(sender)
        with trio.fail_after(PATIENCE):
            async with running(graph) as run:
                for n in range(3):
                    await items.send(n)
                await first_closed.wait()
                for n in range(3, 10):
                    await items.send(n)
                await all_received.wait()
    assert received == [str(n) for n in range(10)]
    assert connections == 2
    assert run.stats["sender"].errors == 0


async def test_sender_client_hands_unsendable_items_to_the_error_policy(autojump_clock):
    sender = WebsocketSender(
        url=f"ws://127.0.0.1:{await unused_port()}/", reconnect_delay=1, max_failed_attempts=3
    )
    letters, dead = trio.open_memory_channel(10)
    graph, items = sender_graph(sender, on_error="skip", dead_letter="rejects")
    graph.add("rejects", ns.ChannelSink(letters))
    with trio.fail_after(PATIENCE):
        async with running(graph) as run:
            started = trio.current_time()
            await items.send("lost?")
            letter = await dead.receive()
            assert trio.current_time() - started == pytest.approx(1 + 2)
            await items.send("again")  # tries afresh
            second = await dead.receive()
            assert trio.current_time() - started == pytest.approx(2 * (1 + 2))
    assert (letter.node, letter.item, second.item) == ("sender", "lost?", "again")
    assert isinstance(letter.error, ConnectionError)
    assert "after 3 failed attempts" in str(letter.error)
    assert run.stats["sender"].skipped == 2


# ---------------------------------------------------------------- configuration


def test_a_node_needs_exactly_one_of_url_and_port():
    for parameters, expected in [
        ("", "give either url, to connect to a websocket server, or port, to serve one"),
        ("\n    url: ws://example.com/\n    port: 8000", "url and port are both given"),
    ]:
        text = f"""\
node_sequence:
  - name: listen
    class: WebsocketListener{parameters}
  - name: print
    class: PrintStreamProcessor
    parents: [listen]
"""
        with pytest.raises(ConfigErrors) as errors:
            load_text(text, "pipeline.yaml")
        (error,) = errors.value.errors
        assert error.message.startswith("node 'listen': ")
        assert expected in error.message
        assert error.line == (2 if not parameters else 4)


def test_bad_urls_and_ports_are_reported_where_they_are():
    text = """\
node_sequence:
  - name: listen
    class: WebsocketListener
    url: http://example.com/
  - name: send
    class: WebsocketSender
    port: 70000
    parents: [listen]
"""
    with pytest.raises(ConfigErrors) as errors:
        load_text(text, "pipeline.yaml")
    messages = {(e.line, e.message) for e in errors.value.errors}
    assert any(
        line == 4 and "url must start with ws:// or wss://" in message for line, message in messages
    ), messages
    assert any(line == 7 and "'port'" in message for line, message in messages), messages


async def test_a_yaml_pipeline_relays_from_one_port_to_another():
    graph = load_text(
        """\
pipeline_name: relay
node_sequence:
  - name: listen
    class: WebsocketListener
    port: 0
    message_format: json
  - name: send
    class: WebsocketSender
    port: 0
    path: /out
    message_format: json
    parents: [listen]
"""
    )
    listener = graph.nodes["listen"].processor
    sender = graph.nodes["send"].processor
    with trio.fail_after(PATIENCE):
        async with (
            running(graph),
            client(f"ws://127.0.0.1:{sender.bound_port}/out") as out,
            client(f"ws://127.0.0.1:{listener.bound_port}/") as into,
        ):
            await trio.testing.wait_all_tasks_blocked()
            for n in range(10):
                await into.send_message(json.dumps({"n": n}))
            assert [json.loads(await out.get_message()) for _ in range(10)] == [
                {"n": n} for n in range(10)
            ]
