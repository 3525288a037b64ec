"""Scale-out through a Kafka consumer group: one process against two, same run.

The same pipeline file, consume -> a CPU-bound stage -> produce, runs as
``nanostream run`` in one process, then in two processes sharing one
consumer group, alternating, each time in a fresh group reading the same
topic from the start and writing to a fresh output topic. The CPU-bound
stage spends a fixed amount of pure-Python work per message (``--work``
rounds of SHA-256), so one process keeps one core busy.

Each run's output is checked: every input number is there, doubled; the
count of duplicates (records processed twice, the at-least-once window of
a rebalance) is reported. The figure for a run is its messages divided by
the span from its first output record to its last (the producers'
timestamps), which leaves out starting the processes and joining the group;
the wall time from start to the last output is reported beside it, with
the CPU time the processes used: CPU / wall says how many cores they got,
which on a machine shared with other work may be fewer than they asked for.

    python benchmarks/bench_scale.py [--messages N] [--work W] [--repeat R]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's import
    import kafka
from kafka_testbed import create_topic, produce_json, tansu_broker, unique_name  # noqa: E402

PIPELINE = """\
pipeline_name: scale
node_sequence:
  - name: in
    class: KafkaConsumer
    topics: ["${SOURCE_TOPIC}"]
    group_id: ${GROUP}
    auto_offset_reset: earliest
    consumer_config:
      max_poll_records: 100
      # Tansu waits about this long before it completes a group join.
      max_poll_interval_ms: 3000
      session_timeout_ms: 6000
      heartbeat_interval_ms: 1000
  - name: work
    class: bench_scale_nodes:Burn
    rounds: ${WORK}
    parents: [in]
  - name: out
    class: KafkaProducer
    topic: ${OUTPUT_TOPIC}
    parents: [work]
"""


def read_output(broker: str, topic: str, messages: int, processes, timeout: float) -> list:
    """Every (value, timestamp in s) of ``topic`` once ``messages`` distinct
    numbers are there; fails if a process exits first or on timeout."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        partitions = [kafka.TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        got, seen = [], set()
        deadline = time.monotonic() + timeout
        while len(seen) < messages:
            for process in processes:
                if process.poll() is not None:
                    raise SystemExit(f"a pipeline exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(seen)} of {messages} numbers after {timeout}s")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    value = json.loads(record.value)
                    got.append((value, record.timestamp / 1000))
                    seen.add(value["n"])
        return got
    finally:
        consumer.close()


def one_run(broker: str, source: str, messages: int, work: int, processes: int) -> dict:
    output = create_topic(broker, 1, "scale-out")
    group = unique_name("scale")
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "scale.yaml"
        config.write_text(PIPELINE)
        environment = dict(
            os.environ,
            BOOTSTRAP_SERVERS=broker,
            SOURCE_TOPIC=source,
            OUTPUT_TOPIC=output,
            GROUP=group,
            WORK=str(work),
            PYTHONPATH=str(HERE),
        )
        started = time.time()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "nanostream", "run", "-q", str(config)],
                env=environment,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        try:
            got = read_output(broker, output, messages, running, timeout=600)
        finally:
            for process in running:
                process.send_signal(signal.SIGINT)
            for process in running:
                process.wait(60)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    for process in running:
        if process.returncode != 0:
            raise SystemExit(f"a pipeline exited with {process.returncode}")
    values = [value for value, _ in got]
    numbers = [value["n"] for value in values]
    assert set(numbers) == set(range(messages)), "a number is missing"
    assert all(value["double"] == 2 * value["n"] for value in values), "a wrong result"
    stamps = [stamp for _, stamp in got]
    shares = collections.Counter(value["pid"] for value in values)
    return {
        "shares": sorted(shares.values(), reverse=True),
        "rate": messages / (max(stamps) - min(stamps)),
        "wall": max(stamps) - started,
        "cpu": cpu,
        "duplicates": len(numbers) - messages,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}/s ({min(values):,.0f}..{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--work", type=int, default=10_000, help="SHA-256 rounds per message")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    with tansu_broker() as broker:
        source = create_topic(broker, args.partitions, "scale-in")
        produce_json(broker, source, ({"n": n} for n in range(args.messages)), args.partitions)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for processes in (1, 2):
                result = one_run(broker, source, args.messages, args.work, processes)
                runs[processes].append(result)
                print(
                    f"  {processes} process{'es' if processes > 1 else '  '}: "
                    f"{result['rate']:>7,.0f}/s, wall {result['wall']:5.1f}s, "
                    f"CPU {result['cpu']:5.1f}s ({result['cpu'] / result['wall']:.2f} cores), "
                    f"{result['duplicates']} duplicates, shares {result['shares']}",
                    flush=True,
                )
    one = [run["rate"] for run in runs[1]]
    two = [run["rate"] for run in runs[2]]
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    ratio = statistics.median(two) / statistics.median(one)
    print(
        f"{args.messages:,} messages over {args.partitions} partitions, {args.work} SHA-256 "
        f"rounds each, median of {args.repeat}: 1 process {spread(one)}, "
        f"2 processes {spread(two)}; 2 / 1 = {ratio:.2f}x "
        f"(pairs {min(ratios):.2f}x..{max(ratios):.2f}x); duplicates "
        f"{sum(run['duplicates'] for run in runs[1] + runs[2])}"
    )


if __name__ == "__main__":
    main()
