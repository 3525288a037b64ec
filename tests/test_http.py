"""HTTP nodes against real HTTP peers on loopback: httpx clients of the
webhook server, and hypercorn servers for the client and the poller."""

from __future__ import annotations

import json
import socket
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from http_testbed import api

import nanostream as ns
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.http import HttpClient, HttpPoller, HttpServer, HttpStatusError

#: A safety net against a hang, never a timing assertion.
PATIENCE = 30


class Collect(ns.NanoStreamProcessor):
    """A sink that appends each item to a list."""

    def __init__(self, into: list) -> None:
        self.into = into

    def process_item(self, message) -> None:
        self.into.append(message)


class Gate(ns.NanoStreamProcessor):
    """Holds every item until ``open`` is set, then passes it on."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.waiting = 0

    async def process_item(self, message):
        self.waiting += 1
        await self.open.wait()
        return message


@asynccontextmanager
async def webhook_pipeline(server: HttpServer, *, gate: Gate | None = None, **options):
    """``server`` -> (gate) -> a list; yields (base URL, items, run, rejects)."""
    items, rejects = [], []
    graph = ns.NanoStreamGraph("hooks")
    graph.add("hooks", server, on_error="skip", dead_letter="rejects", **options)
    parent = "hooks"
    if gate is not None:
        graph.add("gate", gate, parents=["hooks"], max_batch=1)
        parent = "gate"
    graph.add("sink", Collect(items), parents=[parent])
    graph.add("rejects", Collect(rejects))
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        yield f"http://127.0.0.1:{server.bound_port}", items, run, rejects
        if gate is not None:
            gate.open.set()
        run.stop()


async def test_a_posted_body_is_answered_only_once_it_is_handled():
    gate = Gate()
    async with (
        webhook_pipeline(HttpServer(port=0), gate=gate) as (url, items, _, _),
        httpx.AsyncClient() as client,
        trio.open_nursery() as nursery,
    ):
        answers = []

        async def post():
            answers.append(await client.post(url + "/", json={"order": 1}))

        nursery.start_soon(post)
        with trio.fail_after(PATIENCE):
            while gate.waiting < 1:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # in the pipeline, not handled yet
        gate.open.set()
    assert [answer.status_code for answer in answers] == [200]
    assert items == [{"order": 1}]


async def test_a_full_pipeline_answers_503_with_retry_after():
    gate = Gate()
    server = HttpServer(port=0, queue_size=1, retry_after=7)
    answers = {}
    async with (
        webhook_pipeline(server, gate=gate, buffer_size=1) as (url, items, _, _),
        httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client,
        trio.open_nursery() as nursery,
    ):

        async def post(number):
            answers[number] = await client.post(url, json=number)

        # More than the gate, the buffers and the queue can hold.
        for number in range(40):
            nursery.start_soon(post, number)
        with trio.fail_after(PATIENCE):
            while not any(a.status_code == 503 for a in answers.values()):
                await trio.sleep(0.01)
        gate.open.set()
    refused = [a for a in answers.values() if a.status_code == 503]
    assert {a.headers["retry-after"] for a in refused} == {"7"}
    handled = sorted(n for n, a in answers.items() if a.status_code == 200)
    assert len(handled) + len(refused) == 40
    assert sorted(items) == handled


async def test_a_body_that_is_not_json_is_rejected_with_400():
    async with (
        webhook_pipeline(HttpServer(port=0)) as (url, items, run, rejects),
        httpx.AsyncClient() as client,
    ):
        bad = await client.post(url, content=b"{not json")
        good = await client.post(url, content=b'{"ok": true}')
    assert bad.status_code == 400
    assert "not valid json" in bad.json()["message"]
    assert good.status_code == 200
    assert items == [{"ok": True}]
    assert [letter.item for letter in rejects] == [b"{not json"]
    assert "POST / from 127.0.0.1:" in str(rejects[0].error)
    assert run.stats["hooks"].skipped == 1


async def test_a_body_over_the_limit_gets_413():
    async with (
        webhook_pipeline(HttpServer(port=0, max_body_size=10, body_format="bytes")) as (
            url,
            items,
            _,
            rejects,
        ),
        httpx.AsyncClient() as client,
    ):
        big = await client.post(url, content=b"x" * 11)
        small = await client.post(url, content=b"x" * 10)
    assert (big.status_code, small.status_code) == (413, 200)
    assert items == [b"x" * 10]
    assert len(rejects) == 1


async def test_a_bearer_token_is_required_when_set():
    async with (
        webhook_pipeline(HttpServer(port=0, bearer_token="s3cret", body_format="text")) as (
            url,
            items,
            _,
            _,
        ),
        httpx.AsyncClient() as client,
    ):
        none = await client.post(url, content="a")
        wrong = await client.post(url, content="b", headers={"authorization": "Bearer nope"})
        right = await client.post(url, content="c", headers={"authorization": "Bearer s3cret"})
    assert [none.status_code, wrong.status_code, right.status_code] == [401, 401, 200]
    assert none.headers["www-authenticate"] == "Bearer"
    assert items == ["c"]


async def test_health_path_other_paths_and_methods():
    async with (
        webhook_pipeline(HttpServer(port=0, path="/hook")) as (url, items, _, _),
        httpx.AsyncClient() as client,
    ):
        health = await client.get(url + "/health")
        elsewhere = await client.post(url + "/other", json=1)
        get = await client.get(url + "/hook")
    assert health.status_code == 200
    assert elsewhere.status_code == 404
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
    assert items == []


async def test_a_slow_client_does_not_hold_up_the_others():
    async with (
        webhook_pipeline(HttpServer(port=0)) as (url, items, _, _),
        httpx.AsyncClient() as client,
    ):
        port = int(url.rsplit(":", 1)[1])
        slow = trio.socket.socket()
        await slow.connect(("127.0.0.1", port))
        # Headers and half the body, then nothing for now.
        await slow.send(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 12\r\n\r\n{"slow": '
        )
        fast = await client.post(url, json="fast")
        assert fast.status_code == 200
        await slow.send(b"1}\n")
        answer = await slow.recv(4096)
        slow.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert items == ["fast", {"slow": 1}]


async def test_a_request_whose_item_fails_the_pipeline_is_answered_503():
    class Fail(ns.NanoStreamProcessor):
        async def process_item(self, message):
            raise RuntimeError("broken")

    graph = ns.NanoStreamGraph("hooks")
    server = HttpServer(port=0)
    graph.add("hooks", server)
    graph.add("fail", Fail(), parents=["hooks"])
    outcomes, errors = [], []

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        try:
            await ns.run_graph(graph, task_status=task_status)
        except ns.NodeError as error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{server.bound_port}"
            answer = await client.post(url, json=1)
            outcomes.append((answer.status_code, answer.headers.get("retry-after")))
    assert "broken" in str(errors[0])
    # The sender is told to send it again later.
    assert outcomes == [(503, "1")]


def test_a_server_whose_path_and_health_path_clash_is_a_configuration_error():
    text = """\
pipeline_name: p
node_sequence:
  - name: hooks
    class: HttpServer
    port: 8080
    path: /health
"""
    with pytest.raises(ConfigErrors, match="path and health_path are both '/health'"):
        load_text(text, "p.yaml")


# ---------------------------------------------------------------- test servers


async def send_through(node: ns.NanoStreamProcessor, items: list, **options):
    """Run ``items`` through ``node``; what it emitted, what it gave up on, and the run."""
    out, rejects = [], []
    graph = ns.NanoStreamGraph("call")
    graph.add("items", ns.SequenceEmitter(items))
    options.setdefault("on_error", "skip")
    graph.add("call", node, parents=["items"], dead_letter="rejects", **options)
    graph.add("out", Collect(out), parents=["call"])
    graph.add("rejects", Collect(rejects))
    run = await ns.run_graph(graph)
    return out, rejects, run


async def test_the_client_sends_each_item_to_its_url():
    seen = []

    async def handler(method, path, query, body):
        seen.append((method, path, json.loads(body)))
        return 201, {}, {"seen": path}

    async with api(handler) as base:
        client = HttpClient(url=base + "/users/{id}", method="put", response="json")
        out, rejects, _ = await send_through(client, [{"id": n, "v": n} for n in range(20)])
    assert sorted(seen) == sorted(("PUT", f"/users/{n}", {"id": n, "v": n}) for n in range(20))
    assert out == [{"seen": f"/users/{n}"} for n in range(20)]  # in the items' order
    assert rejects == []


async def test_the_client_retries_500_until_it_succeeds():
    attempts = []

    async def handler(method, path, query, body):
        attempts.append(body)
        return (500, {}, b"down") if len(attempts) < 3 else (200, {}, b"ok")

    async with api(handler) as base:
        client = HttpClient(url=base + "/", retry_delay=0.01, response="text")
        out, rejects, _run = await send_through(client, ["x"])
    assert out == ["ok"]
    assert len(attempts) == 3
    assert rejects == []


async def test_the_client_waits_as_long_as_retry_after_asks():
    times = []

    async def handler(method, path, query, body):
        times.append(trio.current_time())
        if len(times) == 1:
            return 429, {"retry-after": "1"}, b"slow down"
        return 200, {}, b""

    async with api(handler) as base:
        _out, rejects, _ = await send_through(HttpClient(url=base + "/", retry_delay=0.01), [1])
    assert rejects == []
    assert len(times) == 2
    assert times[1] - times[0] >= 1.0


async def test_items_that_fail_fail_alone_with_their_error():
    async def handler(method, path, query, body):
        return (404, {}, b"no such user") if path == "/users/2" else (200, {}, b"")

    async with api(handler) as base:
        client = HttpClient(url=base + "/users/{item}", body="none", method="get")
        _out, rejects, run = await send_through(client, [1, 2, 3], on_error="skip")
    assert [letter.item for letter in rejects] == [2]
    error = rejects[0].error
    assert isinstance(error, HttpStatusError) and error.status == 404
    assert "GET http://127.0.0.1:" in str(error) and "HTTP 404: no such user" in str(error)
    assert run.stats["call"].skipped == 1


async def test_a_server_that_is_not_there_fails_after_the_retries():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]  # bound, never listening: connections are refused
        client = HttpClient(url=f"http://127.0.0.1:{port}/", retries=2, retry_delay=0.01)
        _out, rejects, _ = await send_through(client, ["a"], on_error="skip")
    assert len(rejects) == 1
    assert isinstance(rejects[0].error, httpx.ConnectError)


async def test_per_batch_sends_one_json_array():
    bodies = []

    async def handler(method, path, query, body):
        bodies.append(json.loads(body))
        return 200, {}, b""

    async with api(handler) as base:
        await send_through(HttpClient(url=base + "/bulk", per_batch=True), list(range(10)))
    assert [item for body in bodies for item in body] == list(range(10))
    assert len(bodies) < 10


def paged(total: int, size: int):
    """A handler of an API of ``total`` numbered items, ``size`` per page,
    with cursor, page-number and Link-header pagination."""

    async def handler(method, path, query, body):
        params = dict(part.split("=") for part in query.split("&") if part)
        if path == "/cursor":
            after = int(params.get("after", 0))
            items = list(range(after + 1, min(after + size, total) + 1))
            return 200, {}, {"data": items, "next": items[-1] if items else after}
        if path == "/pages":
            page = int(params["page"])
            items = list(range((page - 1) * size + 1, min(page * size, total) + 1))
            return 200, {}, items
        start = int(params.get("start", 1))
        items = list(range(start, min(start + size, total + 1)))
        following = f"{path}?start={start + size}" if start + size <= total else None
        if path == "/json-links":
            return 200, {}, {"items": items, "links": {"next": following}}
        headers = {"link": f'<{following}>; rel="next"'} if following else {}
        return 200, headers, {"items": items}

    return handler


async def poll(poller: HttpPoller, count: int | None = None) -> list:
    """Items from ``poller``: all of them if it ends, else the first ``count``."""
    got = []
    enough = trio.Event()

    class Sink(ns.NanoStreamProcessor):
        def process_item(self, message):
            got.append(message)
            if count is not None and len(got) >= count:
                enough.set()

    graph = ns.NanoStreamGraph("poll")
    graph.add("poll", poller)
    graph.add("sink", Sink(), parents=["poll"])
    with trio.fail_after(PATIENCE):
        if count is None:
            await ns.run_graph(graph)
            return got
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            await enough.wait()
            run.stop()
    return got


async def test_the_poller_follows_link_headers():
    async with api(paged(23, 5)) as base:
        got = await poll(
            HttpPoller(url=base + "/links", pagination="next_link", items_field="items", once=True)
        )
    assert got == list(range(1, 24))


async def test_the_poller_follows_next_links_in_the_answer():
    async with api(paged(23, 5)) as base:
        poller = HttpPoller(
            url=base + "/json-links",
            pagination="next_link",
            items_field="items",
            next_field="links.next",
            once=True,
        )
        got = await poll(poller)
    assert got == list(range(1, 24))


async def test_the_poller_counts_pages_until_one_is_empty():
    async with api(paged(23, 5)) as base:
        got = await poll(HttpPoller(url=base + "/pages", pagination="page", once=True))
    assert got == list(range(1, 24))


async def test_the_poller_keeps_its_cursor_across_restarts(tmp_path):
    total = [23]
    handler = paged(0, 5)

    async def growing(method, path, query, body):
        return await paged(total[0], 5)(method, path, query, body)

    del handler
    state = str(tmp_path / "cursor.json")

    def poller():
        return HttpPoller(
            url=base + "/cursor",
            pagination="cursor",
            items_field="data",
            next_field="next",
            cursor_param="after",
            state_path=state,
            interval=0.05,
        )

    async with api(growing) as base:
        first = await poll(poller(), 23)
        total[0] = 30
        second = await poll(poller(), 7)
    assert first == list(range(1, 24))
    assert second == list(range(24, 31))
    assert json.loads(Path(state).read_text()) == {"position": {"value": 30}}


async def test_a_failing_api_is_tried_again_next_round(caplog):
    calls = []

    async def handler(method, path, query, body):
        calls.append(path)
        return (503, {}, b"busy") if len(calls) <= 2 else (200, {}, [len(calls)])

    async with api(handler) as base:
        got = await poll(HttpPoller(url=base + "/", retries=1, retry_delay=0.01, interval=0.01), 1)
    assert got == [3]
    assert "HTTP 503: busy; trying again" in caplog.text


async def test_a_server_slower_than_the_timeout_fails_the_item_after_the_retries():
    calls = []

    async def handler(method, path, query, body):
        calls.append(path)
        await trio.sleep(PATIENCE)
        return 200, {}, b""

    async with api(handler) as base:
        client = HttpClient(url=base + "/", timeout=0.2, retries=1, retry_delay=0.01)
        _, rejects, _ = await send_through(client, ["slow"])
    assert len(calls) == 2
    assert isinstance(rejects[0].error, httpx.ReadTimeout)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ("class: HttpClient\n    url: ftp://host/{id}", "url must start with http:// or https://"),
        ("class: HttpClient\n    url: http://host/{}", "name each field, as {id} or {item}"),
        (
            "class: HttpClient\n    url: http://h/\n    per_batch: true\n    body: text",
            "body: json",
        ),
        ("class: HttpPoller\n    url: http://h/\n    pagination: cursor", "needs next_field"),
    ],
)
def test_client_configurations_that_cannot_work_are_errors(parameters, message):
    text = f"""\
pipeline_name: p
node_sequence:
  - name: items
    class: SequenceEmitter
    sequence: [1]
  - name: call
    parents: [items]
    {parameters}
"""
    if "HttpPoller" in parameters:
        text = text.replace("    parents: [items]\n", "")
    with pytest.raises(ConfigErrors, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_text(text, "p.yaml")


def test_webhooks_survive_kill_9_when_senders_retry(tmp_path):
    """Senders that retry until they get 200 lose nothing when the pipeline
    is killed with SIGKILL while their requests are in flight."""
    import os
    import re
    import subprocess
    import sys
    import threading

    (tmp_path / "pipeline.yaml").write_text(
        """\
pipeline_name: hooks
node_sequence:
  - name: hooks
    class: HttpServer
    port: 0
  - name: paced
    class: Throttle
    parents: [hooks]
    rate: 300                  # so that requests are in flight when the kill comes
  - name: store
    class: FileWriter
    parents: [paced]
    path: received.jsonl
"""
    )

    readers = []

    def drain(stream) -> None:
        with stream:
            for _ in stream:
                pass

    def start() -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "nanostream", "run", "pipeline.yaml", "--log-level", "info"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for line in process.stderr:
            served = re.search(r"serving POST / on (http://\S+)", line)
            if served:
                # Keep reading stderr, so that the pipe never fills up.
                readers.append(threading.Thread(target=drain, args=(process.stderr,)))
                readers[-1].start()
                return process, served.group(1) + "/"
        raise AssertionError("the server did not start")

    process, url = start()
    current = {"url": url}
    answered = []
    lock = threading.Lock()

    def sender(numbers):
        with httpx.Client(timeout=5) as client:
            for number in numbers:
                while True:
                    try:
                        if client.post(current["url"], json=number).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                with lock:
                    answered.append(number)

    threads = [threading.Thread(target=sender, args=(range(start, 400, 4),)) for start in range(4)]
    for thread in threads:
        thread.start()
    try:
        while len(answered) < 50:
            assert process.poll() is None
            threading.Event().wait(0.01)
        os.kill(process.pid, 9)
        process.wait()
        process, current["url"] = start()
        for thread in threads:
            thread.join(PATIENCE * 2)
        assert sorted(answered) == list(range(400))
    finally:
        process.terminate()
        process.wait(PATIENCE)
        for reader in readers:
            reader.join(PATIENCE)
    lines = (tmp_path / "received.jsonl").read_text().splitlines()
    assert set(map(int, lines)) == set(range(400))  # some twice, perhaps; none lost


async def test_a_drain_answers_200_for_what_it_handles_and_503_for_the_rest():
    gate = Gate()
    server = HttpServer(port=0)
    items = []
    graph = ns.NanoStreamGraph("hooks")
    graph.add("hooks", server, buffer_size=1, max_batch=1)
    graph.add("gate", gate, parents=["hooks"], max_batch=1, buffer_size=1)
    graph.add("sink", Collect(items), parents=["gate"])
    statuses = {}
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        async with httpx.AsyncClient() as client, trio.open_nursery() as senders:

            async def post(number):
                answer = await client.post(f"http://127.0.0.1:{server.bound_port}", json=number)
                statuses[number] = answer.status_code

            for number in range(20):
                senders.start_soon(post, number)
            with trio.fail_after(PATIENCE):
                while gate.waiting < 1:
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
            run.stop()
            gate.open.set()
    assert sorted(statuses) == list(range(20))
    handled = sorted(number for number, status in statuses.items() if status == 200)
    refused = [number for number, status in statuses.items() if status == 503]
    assert sorted(items) == handled
    assert len(handled) + len(refused) == 20 and refused


async def test_an_item_not_handled_within_ack_timeout_is_answered_504():
    gate = Gate()
    async with (
        webhook_pipeline(HttpServer(port=0, ack_timeout=0.2), gate=gate) as (url, items, _, _),
        httpx.AsyncClient() as client,
    ):
        answer = await client.post(url, json="slow")
        assert answer.status_code == 504
        gate.open.set()
    assert items == ["slow"]  # handled after all: a retry would repeat it


async def test_an_answer_that_is_not_json_fails_the_poller_naming_the_url():
    async def handler(method, path, query, body):
        return 200, {}, b"<html>maintenance</html>"

    graph = ns.NanoStreamGraph("poll")
    async with api(handler) as base:
        graph.add("poll", HttpPoller(url=base + "/feed", once=True))
        graph.add("sink", Collect([]), parents=["poll"])
        with pytest.raises(
            ns.NodeError, match=r"GET http://127\.0\.0\.1:\d+/feed: the answer is not JSON"
        ):
            await ns.run_graph(graph)


async def test_headers_read_from_the_environment_are_sent(monkeypatch):
    # The peer is an HttpServer that takes only that bearer token.
    server = HttpServer(port=0, bearer_token="t0ken")
    async with webhook_pipeline(server) as (url, received, _, _):
        monkeypatch.setenv("API_TOKEN", "t0ken")
        graph = load_text(
            f"""\
pipeline_name: call
node_sequence:
  - name: items
    class: SequenceEmitter
    sequence: [{{"id": 1}}]
  - name: call
    class: HttpClient
    parents: [items]
    url: {url}/
    headers:
      Authorization: Bearer ${{API_TOKEN}}
""",
            "call.yaml",
        )
        await ns.run_graph(graph)
    assert received == [{"id": 1}]
