"""Kafka nodes: a consumer source with at-least-once acknowledgements, and a producer sink.

kafka-python clients are blocking and not thread-safe, so each node makes its
calls in a worker thread, one call at a time: a commit-and-poll per batch
for the consumer, a send-and-flush per batch for the producer.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal

import attrs
import trio

from .._params import collection
from .._processor import FailedItems, NanoStreamProcessor, Rejected, WithAck

logger = logging.getLogger(__name__)

ValueFormat = Literal["bytes", "text", "json"]


def _bootstrap_servers_field() -> Any:
    """The ``bootstrap_servers`` parameter, declared once for both Kafka nodes.

    Its default is resolved when the node starts, not when the class is
    declared, so that the node catalogue and the schema never depend on the
    environment they were generated in.
    """
    return attrs.field(
        default=None,
        metadata={
            "description": "Comma-separated host:port list of brokers. Unset, it is "
            "$BOOTSTRAP_SERVERS when the node starts, else localhost:9092."
        },
    )


def _resolve_bootstrap_servers(configured: str | None) -> str:
    if configured:
        return configured
    return os.environ.get("BOOTSTRAP_SERVERS") or "localhost:9092"


def _decode(record: Any, value_format: str) -> Any:
    raw = record.value
    if raw is None or value_format == "bytes":
        return raw
    try:
        text = raw.decode("utf-8")
        return json.loads(text) if value_format == "json" else text
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
        expected = "JSON" if value_format == "json" else "UTF-8 text"
        raise ValueError(
            f"topic {record.topic!r}, partition {record.partition}, offset {record.offset}: "
            f"the value is not {expected} (value_format {value_format!r}): {error}"
        ) from error


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


class _PartitionOffsets:
    """The offsets of one partition handed out and acknowledged since it was assigned."""

    __slots__ = ("acked", "committable", "delivered")

    def __init__(self) -> None:
        self.delivered: collections.deque[int] = collections.deque()
        self.acked: set[int] = set()
        self.committable: int | None = None


class _OffsetTracker:
    """Per partition, the offsets handed out and the ones acknowledged.

    The committable offset of a partition is one past the highest offset
    below which every handed-out offset has been acknowledged, so a commit
    never skips a record still in flight.

    When a rebalance takes partitions away, :meth:`revoke` hands over what
    is committable for them and forgets them: acknowledgements that arrive
    later for records of a revoked partition change nothing, so they can
    never commit an offset over the one its new owner commits. Rebalances
    run on kafka-python's IO thread, commits on a worker thread, and
    acknowledgements arrive on trio's: hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Any, _PartitionOffsets] = {}

    def deliver(self, partition: Any, offsets: list[int]) -> list[Callable[[], None]]:
        """Record ``offsets`` as handed out, in order; return the callbacks
        that acknowledge each."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                state = self._partitions[partition] = _PartitionOffsets()
            state.delivered.extend(offsets)
        return [functools.partial(self._ack, state, offset) for offset in offsets]

    def _ack(self, state: _PartitionOffsets, offset: int) -> None:
        with self._lock:
            delivered, acked = state.delivered, state.acked
            acked.add(offset)
            while delivered and delivered[0] in acked:
                done = delivered.popleft()
                acked.discard(done)
                state.committable = done + 1

    def take_committable(self) -> dict[Any, int]:
        """The offsets to commit since the last call (and forget them)."""
        with self._lock:
            return self._take(list(self._partitions))

    def revoke(self, partitions: Iterable[Any]) -> dict[Any, int]:
        """The offsets to commit for ``partitions``, which are then forgotten."""
        with self._lock:
            partitions = [p for p in partitions if p in self._partitions]
            committable = self._take(partitions)
            for partition in partitions:
                del self._partitions[partition]
            return committable

    def _take(self, partitions: list[Any]) -> dict[Any, int]:
        committable = {}
        for partition in partitions:
            state = self._partitions[partition]
            if state.committable is not None:
                committable[partition] = state.committable
                state.committable = None
        return committable


def _commit_request(offsets: dict[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {partition: OffsetAndMetadata(offset, "", -1) for partition, offset in offsets.items()}


def _commit_on_revoke(consumer: Any, tracker: _OffsetTracker) -> Any:
    """A rebalance listener that commits what is acknowledged for the
    partitions a rebalance (or closing) takes away, then forgets them.

    kafka-python runs it on its IO thread, so it commits with the awaitable
    ``commit_async``: the blocking ``commit`` cannot run there.
    """
    import kafka

    class CommitOnRevoke(kafka.AsyncConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            offsets = tracker.revoke(revoked)
            if not offsets:
                return
            try:
                await consumer.commit_async(_commit_request(offsets))
            except Exception:
                # The new owner starts from the last commit: records repeat, none is lost.
                logger.warning("Kafka offset commit on revocation failed", exc_info=True)

        async def on_partitions_lost(self, lost: set[Any]) -> None:
            # The group has moved on without this member: a commit would be refused.
            tracker.revoke(lost)

        async def on_partitions_assigned(self, assigned: set[Any]) -> None:
            pass

    return CommitOnRevoke()


@attrs.define
class KafkaConsumer(NanoStreamProcessor):
    """Reads records from Kafka topics; offsets are committed once records are handled.

    Each record is yielded with an acknowledgement. Only the highest offset
    below which every record has been acknowledged is committed, per
    partition, so after a crash records may repeat but none is lost.
    """

    topics: list[str] = attrs.field(
        validator=collection, metadata={"description": "The topics to subscribe to."}
    )
    bootstrap_servers: str | None = _bootstrap_servers_field()
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
            bootstrap_servers=_resolve_bootstrap_servers(self.bootstrap_servers),
            group_id=self.group_id,
            auto_offset_reset=self.auto_offset_reset,
            enable_auto_commit=False,
        )
        tracker = self._tracker = _OffsetTracker()

        def connect() -> Any:
            consumer = kafka.KafkaConsumer(**config)
            listener = None if self.group_id is None else _commit_on_revoke(consumer, tracker)
            consumer.subscribe(self.topics, listener=listener)
            return consumer

        self._consumer = await trio.to_thread.run_sync(connect)

    def _items(self, partition: Any, records: list[Any]) -> list[WithAck | Rejected]:
        acks = self._tracker.deliver(partition, [record.offset for record in records])
        items: list[WithAck | Rejected] = []
        for record, ack in zip(records, acks, strict=True):
            try:
                items.append(WithAck(self._value(record), ack))
            except ValueError as error:
                items.append(Rejected(record.value, error, ack))
        return items

    def _value(self, record: Any) -> Any:
        value = _decode(record, self.value_format)
        if not self.records:
            return value
        return KafkaRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=value,
            timestamp=record.timestamp,
            headers=list(record.headers or []),
        )

    def _commit_and_poll(self) -> dict[Any, list[Any]]:
        """Commit what is acknowledged, then poll: one trip to a worker thread.

        The offsets are taken in the thread, so a trip cancelled before it
        starts takes none, and a stopping pipeline commits them at close.
        """
        consumer = self._consumer
        if self.group_id is not None and (offsets := self._tracker.take_committable()):
            try:
                consumer.commit(_commit_request(offsets))
            except Exception:
                # The records will be delivered again; at-least-once still holds.
                logger.warning("Kafka offset commit failed", exc_info=True)
        return consumer.poll(timeout_ms=self.poll_timeout_ms)

    async def generate_batches(self) -> AsyncIterator[list[WithAck]]:
        while True:
            polled = await trio.to_thread.run_sync(self._commit_and_poll)
            batch = []
            for partition, records in polled.items():
                batch += self._items(partition, records)
            if batch:
                yield batch

    async def teardown(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        # Closing revokes every partition: the listener commits what is acknowledged.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: consumer.close(autocommit=False))


@attrs.define
class KafkaProducer(NanoStreamProcessor):
    """Writes each item to a Kafka topic; a batch is done once the broker confirms it."""

    topic: str = attrs.field(metadata={"description": "The topic to write to."})
    bootstrap_servers: str | None = _bootstrap_servers_field()
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
        config["bootstrap_servers"] = _resolve_bootstrap_servers(self.bootstrap_servers)
        self._producer = await trio.to_thread.run_sync(lambda: kafka.KafkaProducer(**config))

    def _key(self, message: Any) -> bytes | None:
        if self.key_field is None or not isinstance(message, dict):
            return None
        key = message.get(self.key_field)
        if key is None:
            return None
        return key if isinstance(key, bytes) else str(key).encode("utf-8")

    def _send_all(self, messages: list[Any]) -> None:
        """Send every message, then wait until the broker has confirmed them.

        A message the client refuses (too large, say) or the broker rejects
        does not stop the others: all are sent, and those that failed are
        reported with :class:`FailedItems`, so that the node's error policy
        applies to them alone.
        """
        producer, topic, value_format = self._producer, self.topic, self.value_format
        futures, errors = {}, {}
        for index, message in enumerate(messages):
            try:
                value = _encode(message, value_format)
                futures[index] = producer.send(topic, value=value, key=self._key(message))
            except Exception as error:
                errors[index] = error
        producer.flush()
        errors |= {index: future.exception for index, future in futures.items() if future.failed()}
        if errors:
            raise FailedItems(errors)

    async def process_batch(self, messages: list[Any]) -> None:
        # Abandoned on cancellation: a batch cut short is not acknowledged,
        # so its records are sent again after a restart, never lost.
        await trio.to_thread.run_sync(self._send_all, messages, abandon_on_cancel=True)

    async def teardown(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return

        def close() -> None:
            try:
                producer.flush()
            finally:
                producer.close()

        # Abandoned when the runtime cuts the teardown short (its timeout, or
        # a cancelled run), so that a broker gone away cannot hold up the
        # end; records still unconfirmed then were never acknowledged.
        await trio.to_thread.run_sync(close, abandon_on_cancel=True)
