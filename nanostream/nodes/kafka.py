"""Kafka nodes: a consumer source with at-least-once acknowledgements, and a producer sink.

kafka-python clients are blocking, so each node keeps them off the trio
thread. The consumer runs its whole poll loop in a thread of its own, so
that it keeps polling, and stays in its group, however long the pipeline
behind it takes: when the pipeline is full it pauses its partitions instead
of ceasing to poll. The producer sends and flushes a batch per trip to a
worker thread.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal, NamedTuple

import attrs
import trio

from .._params import collection
from .._processor import FailedItems, NanoStreamProcessor, Rejected, WithAck

logger = logging.getLogger(__name__)

ValueFormat = Literal["bytes", "text", "json"]

#: How long one step of the poll loop waits for records, at most: a stop,
#: or room in the pipeline, is noticed within it.
_POLL_STEP_MS = 200

#: How long before its deadline a teardown gives up waiting for the broker,
#: so that it can still say what was not committed or confirmed.
_TEARDOWN_MARGIN = 0.2

#: kafka-python settings whose defaults the consumer changes, unless
#: ``consumer_config`` gives them. The poll loop polls several times a
#: second whatever the pipeline does, so the poll interval can be short;
#: it is also how long a rebalance waits for members to rejoin, so a short
#: one makes joining quick. A member that dies is replaced after the
#: session timeout.
_CONSUMER_DEFAULTS = {
    "max_poll_interval_ms": 10_000,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
}

#: The keys of ``consumer_config`` that the node sets itself, and why.
_CONSUMER_OWNED = {
    "bootstrap_servers": "it is the node's parameter 'bootstrap_servers'",
    "group_id": "it is the node's parameter 'group_id'",
    "auto_offset_reset": "it is the node's parameter 'auto_offset_reset'",
    "enable_auto_commit": "the node commits offsets itself, once records are handled",
}
_PRODUCER_OWNED = {"bootstrap_servers": "it is the node's parameter 'bootstrap_servers'"}


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


class _SettingError(ValueError):
    """A pass-through setting that cannot be used: ``args`` are ``(message,
    attribute, key)``, so that a configuration file's error can point at
    the key itself."""

    def __str__(self) -> str:
        return str(self.args[0])


def _settings_validator(client: str, owned: dict[str, str]) -> Callable[[Any, Any, Any], None]:
    """An attrs validator for a pass-through settings mapping: every key must
    be one of kafka-python's ``client.DEFAULT_CONFIG`` (and not one the node
    sets itself). The error names the key, never its value: settings hold
    passwords."""

    def validate(_instance: Any, attribute: Any, settings: Any) -> None:
        if not isinstance(settings, dict):
            raise TypeError(f"{attribute.name} must be a mapping of kafka-python settings")
        import kafka

        known = getattr(kafka, client).DEFAULT_CONFIG
        problems = {}
        for key in settings:
            if key in owned:
                problems[key] = f"{key!r} cannot be set here: {owned[key]}"
            elif key not in known:
                close = difflib.get_close_matches(str(key), list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems[key] = f"{key!r} is not a kafka-python {client} setting{hint}"
        if problems:
            first, *others = problems
            more = f" (and {', '.join(map(repr, others))}, also refused)" if others else ""
            raise _SettingError(problems[first] + more, attribute, first)

    return validate


def _broker_addresses(servers: str) -> list[tuple[str, int]]:
    addresses = []
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"bootstrap_servers: {server.strip()!r} is not host:port (in {servers!r})"
            )
        addresses.append((host.strip("[]"), int(port)))
    return addresses


async def _connect(servers: str, make: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``make()`` (a kafka-python client), once a broker of ``servers`` accepts
    a connection; raises ``ConnectionError`` naming ``servers`` otherwise.

    The connection is tried from trio first, so that an unreachable broker is
    one clear error at once rather than kafka-python's retries and log lines.

    Cancellation: abandons a client still being made.
    """
    reasons = []
    for host, port in _broker_addresses(servers):
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
            await stream.aclose()
            break
        except (OSError, trio.TooSlowError) as error:
            reasons.append(f"{host}:{port}: {_reason(error)}")
    else:
        if len(reasons) == 1:
            reasons = [reasons[0].rpartition(": ")[2]]
        raise ConnectionError(
            f"no Kafka broker reachable at {servers} (bootstrap_servers): {'; '.join(reasons)}"
        )
    import kafka.errors

    try:
        return await trio.to_thread.run_sync(make, abandon_on_cancel=True)
    except kafka.errors.KafkaTimeoutError:
        raise ConnectionError(
            f"no Kafka broker answered at {servers} (bootstrap_servers): something "
            "accepts connections there, but did not answer as Kafka in time"
        ) from None


def _reason(error: BaseException) -> str:
    """Why a connection failed, in a few words (``Connection refused``)."""
    if isinstance(error, trio.TooSlowError):
        return "no answer in time"
    cause = error.__cause__
    while isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    for candidate in (cause, error):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return str(error)


def _quiet_kafka_logs() -> None:
    """Keep kafka-python's own log lines (one per failed reconnection, say)
    out of a run's output unless it logs at debug level: the nodes report
    what matters themselves. A level set on the ``kafka`` logger is kept."""
    kafka_logger = logging.getLogger("kafka")
    if kafka_logger.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        kafka_logger.setLevel(logging.CRITICAL)


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


def _describe_offsets(offsets: dict[Any, int]) -> str:
    """``orders[0] up to 57, orders[1] up to 12``: what a commit would have covered."""
    return ", ".join(
        f"{partition.topic}[{partition.partition}] up to {offset}"
        for partition, offset in sorted(offsets.items())
    )


class _PartitionOffsets:
    """The offsets of one partition handed out, acknowledged and committed
    since it was assigned.

    ``committable`` is one past the highest offset below which every offset
    handed out is acknowledged; ``sent`` the one a commit is under way for;
    ``committed`` the one the broker last confirmed.
    """

    __slots__ = ("acked", "committable", "committed", "delivered", "sent")

    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.acked: set[int] = set()
        self.committable: int | None = None
        self.sent: int | None = None
        self.committed: int | None = None


class _OffsetTracker:
    """Per partition, the offsets handed out, the ones acknowledged, and the
    ones committed.

    The committable offset of a partition is one past the highest offset
    below which every handed-out offset has been acknowledged, so a commit
    never skips a record still in flight. A commit that fails leaves its
    offsets to be sent again.

    When a rebalance takes partitions away, :meth:`forget` hands over what
    is not yet committed for them and stops tracking them: acknowledgements
    that arrive later for records of those partitions change nothing, so
    they can never commit an offset over the one their new owner commits.
    Rebalances run on kafka-python's IO thread, the poll loop on its own,
    and acknowledgements arrive on trio's: hence the lock.
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
            done = 0
            while done < len(delivered) and delivered[done] in acked:
                acked.discard(delivered[done])
                done += 1
            if done:
                state.committable = delivered[done - 1] + 1
                del delivered[:done]

    def take_committable(self, owned: Iterable[Any]) -> dict[Any, tuple[_PartitionOffsets, int]]:
        """The offsets of the ``owned`` partitions to commit now (committable,
        and no commit of them under way), each with its partition's state;
        marks them as under way."""
        with self._lock:
            taken = {}
            for partition in owned:
                state = self._partitions.get(partition)
                if state is not None and state.committable not in (
                    None,
                    state.sent,
                    state.committed,
                ):
                    state.sent = state.committable
                    taken[partition] = (state, state.committable)
            return taken

    def commit_done(self, taken: dict[Any, tuple[_PartitionOffsets, int]], ok: bool) -> None:
        """Record the outcome of committing ``taken``; on failure its offsets
        are committed again next time."""
        with self._lock:
            for state, offset in taken.values():
                if ok and (state.committed is None or offset > state.committed):
                    state.committed = offset
                if state.sent == offset:
                    state.sent = None

    def uncommitted(self) -> dict[Any, int]:
        """Per partition, the committable offset the broker has not confirmed."""
        with self._lock:
            return {
                partition: state.committable
                for partition, state in self._partitions.items()
                if state.committable is not None and state.committable != state.committed
            }

    def tracked(self) -> set[Any]:
        """The partitions with records handed out since they were assigned."""
        with self._lock:
            return set(self._partitions)

    def forget(self, partitions: Iterable[Any]) -> dict[Any, int]:
        """Stop tracking ``partitions`` (a rebalance took them away); returns
        their offsets not yet committed."""
        with self._lock:
            offsets = {}
            for partition in partitions:
                state = self._partitions.pop(partition, None)
                if state is not None and state.committable not in (None, state.committed):
                    offsets[partition] = state.committable
            return offsets


def _commit_request(offsets: dict[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {partition: OffsetAndMetadata(offset, "", -1) for partition, offset in offsets.items()}


def _commit_on_revoke(
    consumer: Any, tracker: _OffsetTracker, group: str, seeks: dict[tuple[str, int], int]
) -> Any:
    """A rebalance listener: commits what is acknowledged for the partitions
    a rebalance revokes, and stops tracking those the new assignment does
    not give back.

    kafka-python keeps the position (and the records fetched) of a
    partition that a rebalance revokes and assigns back to the same
    consumer, so its tracking must go on too; one that moves to another
    consumer is forgotten, and its records in flight are read again by
    the new owner, from the last commit. kafka-python runs the listener on
    its IO thread, so it commits with the awaitable ``commit_async``: the
    blocking ``commit`` cannot run there.

    ``seeks`` holds the positions a checkpoint saved, ``(topic,
    partition) -> offset``: a partition found there is sought to it when
    first assigned, whatever the group committed (kafka-python's ``seek``
    in ``on_partitions_assigned``, as its listener's documentation shows).
    """
    import kafka

    class CommitOnRevoke(kafka.AsyncConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            taken = tracker.take_committable(revoked)
            if not taken:
                return
            offsets = {partition: offset for partition, (_, offset) in taken.items()}
            try:
                await consumer.commit_async(_commit_request(offsets))
            except Exception as error:
                tracker.commit_done(taken, False)
                # The new owner starts from the last commit: records repeat, none is lost.
                logger.warning(
                    "Kafka group %r: offsets of revoked partitions not committed (%s): %s: %s; "
                    "their new owner reads those records again",
                    group,
                    _describe_offsets(offsets),
                    type(error).__name__,
                    error,
                    extra={"event": "commit_failed"},
                )
            else:
                tracker.commit_done(taken, True)

        async def on_partitions_assigned(self, assigned: set[Any]) -> None:
            tracker.forget(tracker.tracked() - set(consumer.assignment()))
            for partition in assigned:
                offset = seeks.pop((partition.topic, partition.partition), None)
                if offset is not None:
                    consumer.seek(partition, offset)

        async def on_partitions_lost(self, lost: set[Any]) -> None:
            # The group has moved on without this member: a commit would be refused.
            offsets = tracker.forget(lost)
            logger.warning(
                "Kafka group %r moved on without this consumer: partitions %s lost%s; "
                "their records in flight are read again by their new owner",
                group,
                ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(lost)),
                f" with offsets not committed ({_describe_offsets(offsets)})" if offsets else "",
                extra={"event": "partitions_lost"},
            )

    return CommitOnRevoke()


class _Handed(NamedTuple):
    """A batch the poll loop hands over, and the position after it in each
    of its partitions: ``(topic, partition) -> offset``."""

    items: list[Any]
    positions: dict[tuple[str, int], int]


class _PollLoop:
    """The consumer's poll loop, run in a thread of its own.

    It owns the kafka-python consumer: no other thread calls it. When trio
    asks for a batch (``wanted``), it polls and hands over what it got;
    while trio does not ask (the pipeline is full) it pauses every assigned
    partition and polls on every ``poll_timeout_ms``, which keeps the
    consumer in its group and lets rebalances run. Each step commits,
    without waiting, what has been acknowledged. Stopped, it commits what
    is left, waiting up to ``commit_timeout_ms``, and closes the consumer.
    """

    def __init__(
        self,
        consumer: Any,
        tracker: _OffsetTracker,
        make_items: Callable[[Any, list[Any], list[Callable[[], None]]], list[Any]],
        deliver: Callable[[_Handed | BaseException], None],
        *,
        commits: bool,
        poll_timeout_ms: int,
        commit_timeout_ms: int,
    ) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.make_items = make_items
        self.deliver = deliver
        self.commits = commits
        self.poll_timeout_ms = poll_timeout_ms
        self.commit_timeout_ms = commit_timeout_ms
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        #: Set when the last commit could not be made: what it would have covered.
        self.not_committed: dict[Any, int] = {}
        self.commit_error: BaseException | None = None

    def run(self) -> None:
        """Poll until stopped; an error ends the loop and is handed to trio."""
        try:
            self._poll_until_stopped()
        except Exception as error:
            self.deliver(error)
        finally:
            self._close()

    def _poll_until_stopped(self) -> None:
        consumer = self.consumer
        pending: dict[Any, list[Any]] = {}
        while not self.stopping.is_set():
            self._commit_async()
            if self.wanted.wait(self.poll_timeout_ms / 1000):
                if not pending:
                    if paused := consumer.paused():
                        consumer.resume(*paused)
                    pending = self._poll(pending)
                if pending:
                    self.wanted.clear()
                    self._hand_over(pending)
                    pending = {}
            else:
                # The pipeline is full: poll on, paused, to stay in the group.
                consumer.pause(*consumer.assignment())
                pending = self._poll(pending)

    def _poll(self, pending: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """``pending`` and what one poll adds to it, less the records of
        partitions a rebalance moved away: their new owner reads them from
        the last commit."""
        polled = self.consumer.poll(timeout_ms=min(self.poll_timeout_ms, _POLL_STEP_MS))
        for partition, records in polled.items():
            pending.setdefault(partition, []).extend(records)
        if pending:
            owned = self.consumer.assignment()
            pending = {p: records for p, records in pending.items() if p in owned}
        return pending

    def _hand_over(self, pending: dict[Any, list[Any]]) -> None:
        batch = []
        positions = {}
        for partition, records in pending.items():
            acks = self.tracker.deliver(partition, [record.offset for record in records])
            batch += self.make_items(partition, records, acks)
            positions[partition.topic, partition.partition] = records[-1].offset + 1
        self.deliver(_Handed(batch, positions))

    def _commit_async(self) -> None:
        if not self.commits:
            return
        taken = self.tracker.take_committable(self.consumer.assignment())
        if not taken:
            return

        def done(_offsets: Any, response: Any) -> None:
            self.tracker.commit_done(taken, not isinstance(response, BaseException))

        self.consumer.commit_async(
            _commit_request({p: offset for p, (_, offset) in taken.items()}), callback=done
        )

    def _close(self) -> None:
        consumer = self.consumer
        try:
            if self.commits:
                # Forgotten first, so that leaving the group has nothing to commit.
                owned = consumer.assignment()
                offsets = self.tracker.forget(self.tracker.tracked())
                offsets = {p: offset for p, offset in offsets.items() if p in owned}
                if offsets:
                    self.not_committed = offsets
                    try:
                        consumer.commit(_commit_request(offsets), timeout_ms=self.commit_timeout_ms)
                    except Exception as error:
                        self.commit_error = error
                    else:
                        self.not_committed = {}
        finally:
            consumer.close(autocommit=False, timeout_ms=self.commit_timeout_ms)


@attrs.define
class KafkaConsumer(NanoStreamProcessor):
    """Reads records from Kafka topics; offsets are committed once records are handled.

    Each record is yielded with an acknowledgement. Only the highest offset
    below which every record has been acknowledged is committed, per
    partition, so after a crash records may repeat but none is lost. While
    the pipeline is full the consumer pauses its partitions and keeps
    polling, so it keeps its place in its group (kafka-python's
    ``pause``/``resume``).

    Errors: setup raises ``ConnectionError`` naming ``bootstrap_servers``
    when no broker is reachable; teardown raises ``RuntimeError`` naming the
    offsets it could not commit, so that the run fails.
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
    commit_timeout_ms: int = attrs.field(
        default=5000,
        metadata={
            "description": "How long the last commit, when the node stops, may wait for "
            "the broker, in milliseconds."
        },
    )
    consumer_config: dict[str, Any] = attrs.field(
        factory=dict,
        validator=_settings_validator("KafkaConsumer", _CONSUMER_OWNED),
        metadata={
            "description": "Further kafka-python KafkaConsumer settings, passed through. "
            "Unless given here, max_poll_interval_ms and session_timeout_ms are 10000 "
            "and heartbeat_interval_ms 3000."
        },
    )

    _loop: _PollLoop | None = attrs.field(default=None, init=False, repr=False, alias="_loop")
    _batches: Any = attrs.field(default=None, init=False, repr=False, alias="_batches")
    _thread: threading.Thread | None = attrs.field(
        default=None, init=False, repr=False, alias="_thread"
    )
    # Per (topic, partition), the offset after the last record emitted, and
    # what the last checkpoint held: see snapshot() and restore().
    _positions: dict[tuple[str, int], int] = attrs.field(
        factory=dict, init=False, repr=False, alias="_positions"
    )
    _restored: dict[tuple[str, int], int] = attrs.field(
        factory=dict, init=False, repr=False, alias="_restored"
    )

    async def setup(self) -> None:
        import kafka

        _quiet_kafka_logs()
        servers = _resolve_bootstrap_servers(self.bootstrap_servers)
        config = {**_CONSUMER_DEFAULTS, **self.consumer_config}
        config.update(
            bootstrap_servers=servers,
            group_id=self.group_id,
            auto_offset_reset=self.auto_offset_reset,
            enable_auto_commit=False,
        )
        tracker = _OffsetTracker()

        def connect() -> Any:
            consumer = kafka.KafkaConsumer(**config)
            listener = (
                None
                if self.group_id is None
                else _commit_on_revoke(consumer, tracker, self.group_id, dict(self._restored))
            )
            consumer.subscribe(self.topics, listener=listener)
            return consumer

        consumer = await _connect(servers, connect)
        # Room for a batch and the loop's failure, so that handing either never waits.
        send, self._batches = trio.open_memory_channel(2)
        token = trio.lowlevel.current_trio_token()

        def hand(batch: _Handed | BaseException) -> None:
            # Trio asked for this batch, so there is room; unless it stopped asking.
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                send.send_nowait(batch)

        def deliver(batch: _Handed | BaseException) -> None:
            # Never waits for trio: the poll loop goes on whatever trio is doing.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(hand, batch)

        loop = self._loop = _PollLoop(
            consumer,
            tracker,
            self._items,
            deliver,
            commits=self.group_id is not None,
            poll_timeout_ms=self.poll_timeout_ms,
            commit_timeout_ms=self.commit_timeout_ms,
        )
        # A thread of its own, not trio's: it must outlive a cancelled node
        # until its teardown has let it commit and close.
        self._thread = threading.Thread(
            target=loop.run, name=f"kafka poll loop {self.topics}", daemon=True
        )
        self._thread.start()

    def _items(
        self, _partition: Any, records: list[Any], acks: list[Callable[[], None]]
    ) -> list[WithAck | Rejected]:
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

    async def generate_batches(self) -> AsyncIterator[list[WithAck]]:
        loop, batches = self._loop, self._batches
        assert loop is not None and batches is not None
        positions = self._positions
        while True:
            loop.wanted.set()
            batch = await batches.receive()
            if isinstance(batch, BaseException):
                raise batch
            # Recorded as it is yielded, for snapshot(): nothing runs in between.
            positions.update(batch.positions)
            yield batch.items

    def snapshot(self) -> dict[tuple[str, int], int]:
        """Per ``(topic, partition)``, the offset after the last record
        emitted: taken at a checkpoint, when every record emitted is handled."""
        return {**self._restored, **self._positions}

    def restore(self, snapshot: dict[tuple[str, int], int]) -> None:
        """Start from a checkpoint: each partition it names is read from
        its saved offset, not from the group's committed one (which may be
        ahead of it: offsets are committed once the checkpoint is saved, and
        a crash may come in between). Needs a ``group_id``."""
        self._restored = dict(snapshot)
        if self.group_id is None:
            logger.warning(
                "KafkaConsumer of %s has no group_id: it cannot start from the "
                "checkpoint's offsets, and reads from %r",
                self.topics,
                self.auto_offset_reset,
                extra={"event": "positions_not_restored"},
            )

    async def teardown(self) -> None:
        """Stop the poll loop: it commits what is acknowledged and closes.

        Raises ``RuntimeError`` naming the offsets it could not commit (the
        broker refused, or did not answer before the teardown's deadline),
        so that the run fails; those records are read again after a restart.

        Cancellation: the loop is abandoned (it goes on in its thread until
        its commit returns), and what it had to commit is logged.
        """
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.stopping.set()
        try:
            with trio.move_on_at(trio.current_effective_deadline() - _TEARDOWN_MARGIN):
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        except trio.Cancelled:
            if offsets := loop.tracker.uncommitted() or loop.not_committed:
                logger.warning(
                    "Kafka consumer stopped before committing %s; "
                    "those records are read again after a restart",
                    _describe_offsets(offsets),
                    extra={"event": "not_committed"},
                )
            raise
        if thread.is_alive():
            if offsets := loop.tracker.uncommitted() or loop.not_committed:
                raise RuntimeError(
                    f"offsets not committed ({_describe_offsets(offsets)}): the broker did "
                    "not answer in time; those records are read again after a restart"
                )
        elif loop.commit_error is not None:
            error = loop.commit_error
            raise RuntimeError(
                f"offsets not committed ({_describe_offsets(loop.not_committed)}): "
                f"{type(error).__name__}: {error}; those records are read again after a restart"
            )


def _close_producer(producer: Any) -> None:
    import kafka.errors

    try:
        producer.close(timeout=0)
    except kafka.errors.KafkaTimeoutError:
        # Records of a batch cut short are still unconfirmed: they were never
        # acknowledged, so they are sent again after a restart. Drop them
        # rather than wait for a broker that may be gone.
        producer._sender.force_close()
        producer._closed = True


@attrs.define
class KafkaProducer(NanoStreamProcessor):
    """Writes each item to a Kafka topic; a batch is done once the broker confirms it.

    Errors: setup raises ``ConnectionError`` naming ``bootstrap_servers``
    when no broker is reachable; a record the client or broker refuses is
    reported with :class:`FailedItems`, for the node's error policy.
    """

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
        validator=_settings_validator("KafkaProducer", _PRODUCER_OWNED),
        metadata={"description": "Further kafka-python KafkaProducer settings, passed through."},
    )

    _producer: Any = attrs.field(default=None, init=False, repr=False, alias="_producer")
    _unconfirmed: int = attrs.field(default=0, init=False, repr=False, alias="_unconfirmed")

    async def setup(self) -> None:
        import kafka

        _quiet_kafka_logs()
        config = dict(self.producer_config)
        servers = config["bootstrap_servers"] = _resolve_bootstrap_servers(self.bootstrap_servers)
        producer = await _connect(servers, lambda: kafka.KafkaProducer(**config))
        # The node closes the producer itself, within the time a stop allows;
        # kafka-python's exit handler would wait without end for a broker gone.
        if unregister := getattr(producer, "_unregister_cleanup", None):
            unregister()
        self._producer = producer

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
        """Cancellation: the flush is abandoned, and the batch, not
        acknowledged, is sent again after a restart, never lost."""
        try:
            await trio.to_thread.run_sync(self._send_all, messages, abandon_on_cancel=True)
        except trio.Cancelled:
            self._unconfirmed += len(messages)
            raise

    async def teardown(self) -> None:
        """Close the producer; every batch acknowledged was flushed already.

        Raises ``RuntimeError`` when a batch was cut short before the broker
        confirmed it, so that the run fails; its records, never
        acknowledged, are sent again after a restart.

        Cancellation: the close is abandoned.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with trio.move_on_at(trio.current_effective_deadline() - _TEARDOWN_MARGIN):
            await trio.to_thread.run_sync(_close_producer, producer, abandon_on_cancel=True)
        if self._unconfirmed:
            raise RuntimeError(
                f"{self._unconfirmed} records to {self.topic!r} not confirmed by the broker; "
                "not acknowledged, they are sent again after a restart"
            )
