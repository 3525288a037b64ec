"""Prometheus metrics and health checks, scraped over real loopback HTTP."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import nanostream as ns
from nanostream.observe import RunHolder, serve_observed

COUNTER_ATTRIBUTES = {
    "nanostream_items_received_total": "received",
    "nanostream_items_emitted_total": "emitted",
    "nanostream_items_skipped_total": "skipped",
    "nanostream_retries_total": "retries",
    "nanostream_errors_total": "errors",
    "nanostream_items_dead_lettered_total": "dead_lettered",
    "nanostream_items_acknowledged_total": "acknowledged",
    "nanostream_busy_seconds_total": "busy_seconds",
}


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """One request with the standard library's HTTP client."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    return await trio.to_thread.run_sync(fetch, port, path, method)


async def scrape(port: int) -> dict[tuple[str, str], float]:
    """Every sample of /metrics as {(sample name, node): value}."""
    status, headers, body = await get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("nanostream_"):
                samples[sample.name, sample.labels["node"]] = sample.value
                assert sample.labels["pipeline"] == "metered"
    return samples


@attrs.define
class AckedNumbers(ns.NanoStreamProcessor):
    count: int = 10
    acked: list[int] = attrs.field(factory=list)

    def generate(self):
        for number in range(self.count):
            yield ns.WithAck(number, lambda number=number: self.acked.append(number))


@attrs.define
class RejectMultiplesOfThree(ns.NanoStreamProcessor):
    def process_item(self, message):
        if message % 3 == 0:
            raise ValueError(f"{message} is a multiple of three")
        return message


def metered_graph(source: ns.NanoStreamProcessor) -> ns.NanoStreamGraph:
    graph = ns.NanoStreamGraph("metered")
    graph.add("numbers", source)
    graph.add(
        "check",
        RejectMultiplesOfThree(),
        ["numbers"],
        on_error="retry",
        retries=1,
        retry_delay=0,
        retry_fallback="skip",
        dead_letter="rejects",
    )
    graph.add("keep", ns.BlackHole(), ["check"], buffer_size=4)
    graph.add("rejects", ns.BlackHole())
    return graph


async def test_counters_are_exact_after_a_known_input(nursery):
    source = AckedNumbers(10)
    finished = trio.Event()

    async def run_to_the_end(task_status):
        await ns.run_graph(metered_graph(source), task_status=task_status)
        finished.set()

    run = await nursery.start(run_to_the_end)
    port = await nursery.start(ns.serve_metrics, run, 0)
    with trio.fail_after(30):
        await finished.wait()

    samples = await scrape(port)
    # 0, 3, 6 and 9 fail twice each (one retry), then go to the dead letters.
    expected = {
        "numbers": dict(emitted=10, acknowledged=10),
        "check": dict(received=10, emitted=6, errors=8, retries=4, skipped=4, dead_lettered=4),
        "keep": dict(received=6),
        "rejects": dict(received=4),
    }
    for node, counts in expected.items():
        for name, attribute in COUNTER_ATTRIBUTES.items():
            if attribute == "busy_seconds":
                assert samples[name, node] == run.stats[node].busy_seconds
            else:
                assert samples[name, node] == counts.get(attribute, 0), (name, node)
    assert sorted(source.acked) == list(range(10))
    assert samples["nanostream_queue_capacity", "keep"] == 4
    assert samples["nanostream_queue_capacity", "numbers"] == 0
    for node in expected:
        assert samples["nanostream_queue_depth", node] == 0
        assert samples["nanostream_node_running", node] == 0


async def test_each_worker_has_its_busy_seconds(nursery):
    graph = ns.NanoStreamGraph("metered")
    graph.add("numbers", ns.SequenceEmitter(list(range(100))))
    graph.add("check", RejectMultiplesOfThree(), ["numbers"], on_error="skip", workers=3)
    finished = trio.Event()

    async def run_to_the_end(task_status):
        await ns.run_graph(graph, task_status=task_status)
        finished.set()

    run = await nursery.start(run_to_the_end)
    port = await nursery.start(ns.serve_metrics, run, 0)
    with trio.fail_after(30):
        await finished.wait()
    _, _, body = await get(port, "/metrics")
    [family] = [
        family
        for family in text_string_to_metric_families(body)
        if family.name == "nanostream_worker_busy_seconds"
    ]
    spent = {
        (sample.labels["node"], sample.labels["worker"]): sample.value for sample in family.samples
    }
    assert spent == {
        ("numbers", "0"): 0.0,
        **{
            ("check", str(worker)): run.stats["check"].worker_busy_seconds[worker]
            for worker in range(3)
        },
    }


@attrs.define
class GatedSink(ns.NanoStreamProcessor):
    """A sink whose setup waits until the test opens the gate."""

    gate: trio.Event

    async def setup(self):
        await self.gate.wait()

    def process_batch(self, messages):
        return None


async def test_readyz_follows_setup_running_and_the_end(nursery):
    feed, inbox = trio.open_memory_channel(10)
    gate = trio.Event()
    graph = ns.NanoStreamGraph("metered")
    graph.add("feed", ns.ChannelSource(inbox))
    graph.add("sink", GatedSink(gate), ["feed"])
    holder = RunHolder(graph)
    started, finished = trio.Event(), trio.Event()

    async def run_observed():
        async def run_to_the_end(task_status):
            await ns.run_graph(graph, task_status=task_status)
            finished.set()

        holder.started(await nursery.start(run_to_the_end), trio.current_time())
        started.set()

    port = await nursery.start(serve_observed, holder, 0)
    nursery.start_soon(run_observed)

    assert (await get(port, "/readyz"))[::2] == (503, "not ready: setting up 2 nodes\n")
    assert (await get(port, "/healthz"))[::2] == (200, "ok\n")
    assert await scrape(port) == {}

    gate.set()
    with trio.fail_after(30):
        await started.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert (await get(port, "/readyz"))[::2] == (200, "ready: 2 nodes running\n")
    await feed.send("one")
    await trio.testing.wait_all_tasks_blocked()
    samples = await scrape(port)
    assert samples["nanostream_node_running", "feed"] == 1
    assert samples["nanostream_node_running", "sink"] == 1
    assert samples["nanostream_items_received_total", "sink"] == 1

    await feed.aclose()
    with trio.fail_after(30):
        await finished.wait()
    status, _, body = await get(port, "/readyz")
    assert (status, body) == (503, "not ready: feed finished, sink finished\n")
    assert (await get(port, "/healthz"))[0] == 200


async def test_unknown_paths_methods_and_malformed_requests(nursery):
    graph = ns.NanoStreamGraph("metered")
    graph.add("numbers", ns.SequenceEmitter([1]))
    port = await nursery.start(serve_observed, RunHolder(graph), 0)

    status, _, body = await get(port, "/nowhere")
    assert (status, body) == (404, "not found: try /metrics, /healthz or /readyz\n")
    status, headers, _ = await get(port, "/metrics", method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    status, headers, body = await get(port, "/healthz", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "3", "")
    assert (await get(port, "/healthz?verbose=1"))[::2] == (200, "ok\n")

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"nonsense\r\n\r\n")
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")

    # A client that connects and says nothing holds up no one else.
    async with await trio.open_tcp_stream("127.0.0.1", port):
        assert (await get(port, "/healthz"))[0] == 200


NANOSTREAM_RUN = (sys.executable, "-m", "nanostream", "run")

FOREVER = textwrap.dedent("""\
    pipeline_name: metered
    node_sequence:
      - name: tick
        class: ConstantEmitter
        thing: tick
        delay: 0.01
      - name: print
        class: PrintStreamProcessor
        parents: [tick]
    """)


def test_nanostream_run_serves_metrics_until_it_stops(tmp_path: Path) -> None:
    config = tmp_path / "forever.yaml"
    config.write_text(FOREVER)
    process = subprocess.Popen(
        [*NANOSTREAM_RUN, str(config), "-q", "--log-level", "info", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        serving = process.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", serving).group(1))
        # The first printed item shows both nodes running.
        assert process.stdout.readline() == "tick\n"
        assert fetch(port, "/readyz")[::2] == (200, "ready: 2 nodes running\n")
        samples = trio.run(scrape, port)
        assert samples["nanostream_items_emitted_total", "tick"] >= 1
        assert samples["nanostream_node_running", "print"] == 1
        # `nanostream graph` pointed at the running pipeline labels its nodes.
        drawn = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanostream",
                "graph",
                str(config),
                "--metrics",
                f"http://127.0.0.1:{port}/metrics",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert re.search(r'tick\["tick<br/>ConstantEmitter<br/>out \d+<br/>running"\]', drawn)
        assert re.search(
            r'print\["print<br/>PrintStreamProcessor<br/>in \d+, out \d+, queue \d+/\d+<br/>'
            r'running"\]',
            drawn,
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "pipeline 'metered' stopped after" in process.stderr.read()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def test_nanostream_run_says_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    config = tmp_path / "forever.yaml"
    config.write_text(FOREVER)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*NANOSTREAM_RUN, str(config), "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"nanostream: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "in use" in result.stderr
