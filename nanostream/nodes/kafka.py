"""Kafka nodes: a consumer source with at-least-once acknowledgements, and a producer sink.

kafka-python clients are blocking and not thread-safe, so each node makes its
calls in a worker thread, one call at a time: a poll per batch for the
consumer, a send-and-flush per batch for the producer.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Literal

import attrs
import trio

from .._processor import NanoStreamProcessor, WithAck

logger = logging.getLogger(__name__)

ValueFormat = Literal["bytes", "text", "json"]


def _default_bootstrap_servers() -> str:
    return os.environ.get("BOOTSTRAP_SERVERS", "localhost:9092")


def _bootstrap_servers_field() -> Any:
    """The ``bootstrap_servers`` parameter, declared once for both Kafka nodes."""
    return attrs.field(
        factory=_default_bootstrap_servers,
        metadata={
            "description": "Comma-separated host:port list of brokers; defaults to "
            "the BOOTSTRAP_SERVERS environment variable, else localhost:9092."
        },
    )


def _decode(raw: bytes | None, value_format: str) -> Any:
    if raw is None or value_format == "bytes":
        return raw
    text = raw.decode("utf-8")
    return json.loads(text) if value_format == "json" else text


def _encode(value: Any, value_format: str) -> bytes | None:
    if value is None:
        return None
    if value_format == "json":
        return json.dumps(value).encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if value_format == "text":
        return str(value).encode("utf-8")
    raise TypeError(f"value_format 'bytes' needs bytes, not {type(value).__name__}")


@attrs.frozen
class KafkaRecord:
    """One consumed Kafka record, with its value decoded by ``value_format``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp: int
    headers: list[tuple[str, bytes]]


class _OffsetTracker:
    """Per partition, the offsets handed out and the ones acknowledged.

    The committable offset of a partition is one past the highest offset
    below which every handed-out offset has been acknowledged, so a commit
    never skips a record still in flight.
    """

    def __init__(self) -> None:
        self._delivered: dict[Any, collections.deque[int]] = {}
        self._acked: dict[Any, set[int]] = {}
        self._committable: dict[Any, int] = {}

    def deliver(self, partition: Any, offset: int) -> None:
        self._delivered.setdefault(partition, collections.deque()).append(offset)
        self._acked.setdefault(partition, set())

    def ack(self, partition: Any, offset: int) -> None:
        delivered, acked = self._delivered[partition], self._acked[partition]
        acked.add(offset)
        while delivered and delivered[0] in acked:
            done = delivered.popleft()
            acked.discard(done)
            self._committable[partition] = done + 1

    def take_committable(self) -> dict[Any, int]:
        """The offsets to commit since the last call (and forget them)."""
        committable, self._committable = self._committable, {}
        return committable


@attrs.define
class KafkaConsumer(NanoStreamProcessor):
    """Reads records from Kafka topics; offsets are committed once records are handled.

    Each record is yielded with an acknowledgement. Only the highest offset
    below which every record has been acknowledged is committed, per
    partition, so after a crash records may repeat but none is lost.
    """

    topics: list[str] = attrs.field(metadata={"description": "The topics to subscribe to."})
    bootstrap_servers: str = _bootstrap_servers_field()
    group_id: str | None = attrs.field(
        default=None,
        metadata={"description": "Consumer group; offsets are committed only when one is set."},
    )
    auto_offset_reset: Literal["earliest", "latest"] = attrs.field(
        default="latest",
        metadata={"description": "Where to start when the group has no committed offset."},
    )
    value_format: ValueFormat = attrs.field(
        default="json",
        metadata={"description": "How to decode values: raw bytes, UTF-8 text, or JSON."},
    )
    records: bool = attrs.field(
        default=False,
        metadata={
            "description": "Emit KafkaRecord objects (topic, partition, offset, key, "
            "value, timestamp, headers) instead of the decoded values."
        },
    )
    poll_timeout_ms: int = attrs.field(
        default=1000,
        metadata={"description": "How long one poll waits for records, in milliseconds."},
    )
    consumer_config: dict[str, Any] = attrs.field(
        factory=dict,
        metadata={"description": "Further kafka-python KafkaConsumer settings, passed through."},
    )

    _consumer: Any = attrs.field(default=None, init=False, repr=False, alias="_consumer")
    _tracker: _OffsetTracker = attrs.field(
        factory=_OffsetTracker, init=False, repr=False, alias="_tracker"
    )

    async def setup(self) -> None:
        import kafka

        config = dict(self.consumer_config)
        config.update(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            auto_offset_reset=self.auto_offset_reset,
            enable_auto_commit=False,
        )
        self._tracker = _OffsetTracker()
        self._consumer = await trio.to_thread.run_sync(
            lambda: kafka.KafkaConsumer(*self.topics, **config)
        )

    def _item(self, record: Any) -> WithAck:
        from kafka import TopicPartition

        partition = TopicPartition(record.topic, record.partition)
        offset = record.offset
        self._tracker.deliver(partition, offset)
        value = _decode(record.value, self.value_format)
        if self.records:
            value = KafkaRecord(
                topic=record.topic,
                partition=record.partition,
                offset=offset,
                key=record.key,
                value=value,
                timestamp=record.timestamp,
                headers=list(record.headers or []),
            )
        return WithAck(value, lambda: self._tracker.ack(partition, offset))

    async def _commit(self) -> None:
        if self.group_id is None or self._consumer is None:
            return
        offsets = self._tracker.take_committable()
        if not offsets:
            return
        from kafka.structs import OffsetAndMetadata

        consumer = self._consumer
        to_commit = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        try:
            await trio.to_thread.run_sync(lambda: consumer.commit(to_commit))
        except Exception:
            # The records will be delivered again; at-least-once still holds.
            logger.warning("Kafka offset commit failed", exc_info=True)

    async def generate_batches(self) -> AsyncIterator[list[WithAck]]:
        consumer = self._consumer
        while True:
            await self._commit()
            polled = await trio.to_thread.run_sync(
                lambda: consumer.poll(timeout_ms=self.poll_timeout_ms)
            )
            batch = [self._item(record) for records in polled.values() for record in records]
            if batch:
                yield batch

    async def teardown(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        offsets = self._tracker.take_committable() if self.group_id is not None else {}

        def close() -> None:
            if offsets:
                from kafka.structs import OffsetAndMetadata

                try:
                    consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
                except Exception:
                    logger.warning("Kafka offset commit at close failed", exc_info=True)
            consumer.close(autocommit=False)

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close)


@attrs.define
class KafkaProducer(NanoStreamProcessor):
    """Writes each item to a Kafka topic; a batch is done once the broker confirms it."""

    topic: str = attrs.field(metadata={"description": "The topic to write to."})
    bootstrap_servers: str = _bootstrap_servers_field()
    value_format: ValueFormat = attrs.field(
        default="json",
        metadata={"description": "How to encode values: raw bytes, UTF-8 text, or JSON."},
    )
    key_field: str | None = attrs.field(
        default=None,
        metadata={"description": "Field of a dict item whose value becomes the record key."},
    )
    producer_config: dict[str, Any] = attrs.field(
        factory=dict,
        metadata={"description": "Further kafka-python KafkaProducer settings, passed through."},
    )

    _producer: Any = attrs.field(default=None, init=False, repr=False, alias="_producer")

    async def setup(self) -> None:
        import kafka

        config = dict(self.producer_config)
        config["bootstrap_servers"] = self.bootstrap_servers
        self._producer = await trio.to_thread.run_sync(lambda: kafka.KafkaProducer(**config))

    def _key(self, message: Any) -> bytes | None:
        if self.key_field is None or not isinstance(message, dict):
            return None
        key = message.get(self.key_field)
        if key is None:
            return None
        return key if isinstance(key, bytes) else str(key).encode("utf-8")

    def _send_all(self, messages: list[Any]) -> None:
        producer = self._producer
        futures = [
            producer.send(
                self.topic, value=_encode(message, self.value_format), key=self._key(message)
            )
            for message in messages
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=0)  # raises the send's error, if any

    async def process_batch(self, messages: list[Any]) -> None:
        await trio.to_thread.run_sync(self._send_all, messages)

    async def teardown(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return

        def close() -> None:
            try:
                producer.flush()
            finally:
                producer.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close)
