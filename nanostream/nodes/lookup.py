"""Enrichment: adding to each item the fields of its row in a lookup table."""

from __future__ import annotations

import csv
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Literal

import attrs
import trio
from attrs import validators as v

from .._durations import Duration, duration
from .._params import collection
from .._processor import NanoStreamProcessor
from .._runtime import node_nursery
from .kafka import (
    _bootstrap_servers_field,
    _connect,
    _quiet_kafka_logs,
    _resolve_bootstrap_servers,
    _settings_validator,
)

logger = logging.getLogger("nanostream")

#: The settings the topic reader sets itself, and why.
_TOPIC_READER_OWNED = {
    "bootstrap_servers": "it is the node's parameter 'bootstrap_servers'",
    "group_id": "the topic is read outside any consumer group, every partition from the start",
    "enable_auto_commit": "the topic is read from the start on every run; nothing is committed",
}

#: A table: the rows by the text of their key.
Table = dict[str, dict[str, Any]]


class MissingRow(LookupError):
    """What :class:`Lookup` raises, under ``on_miss: fail``, for an item whose key has no row."""


def _key_text(value: Any) -> str:
    """A key as the table holds it: text, so that a CSV cell ``"7"``, a
    Kafka record key ``b"7"`` and a JSON ``7`` are one key."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def read_table(path: str, key: str) -> Table:
    """The rows of the CSV or JSON Lines file at ``path`` (by its suffix:
    ``.csv``, else JSON Lines, one object a line), keyed by their field
    ``key``; a later row of a key replaces an earlier one.

    Raises ``ValueError`` naming the file and line of a row that is not a
    JSON object, has no ``key`` field, or (CSV) has more or fewer fields
    than the header or an unterminated quote; and ``OSError`` for a file
    that cannot be read.
    """
    table: Table = {}
    with open(path, newline="", encoding="utf-8") as file:
        rows = _csv_rows(path, file) if path.endswith(".csv") else _json_lines(path, file)
        for line, row in rows:
            if key not in row:
                raise ValueError(f"{path}:{line}: the row has no field {key!r} (table_key)")
            table[_key_text(row[key])] = row
    return table


def _csv_rows(path: str, file: Any) -> Any:
    """The rows of a CSV table with its header's fields, each with its line:
    Python's ``csv.DictReader`` fills a short row with ``None`` and keeps a
    long row's extra fields under the key ``None``; here both are errors,
    as is a quote left open at the end of the file (``strict``)."""
    reader = csv.DictReader(file, strict=True)
    try:
        for row in reader:
            if None in row:
                raise ValueError(
                    f"{path}:{reader.line_num}: the row has more fields than the header"
                )
            if None in row.values():
                raise ValueError(
                    f"{path}:{reader.line_num}: the row has fewer fields than the header"
                )
            yield reader.line_num, row
    except csv.Error as error:
        raise ValueError(f"{path}: after line {reader.line_num}: {error}") from None


def _json_lines(path: str, file: Any) -> Any:
    for line, text in enumerate(file, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{line}: not JSON: {error.msg}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line}: a row is a JSON object, not {type(row).__name__}")
        yield line, row


def _signature(path: str) -> tuple[int, int, int] | None:
    """What changes when the file at ``path`` is rewritten or replaced."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


@attrs.define
class Lookup(NanoStreamProcessor):
    """Adds to each item the fields of its row in a table: a lookup join
    (enrichment) against a table kept in memory.

    The table comes from one of:

    * a file (``path``): CSV with a header line, or JSON Lines (one object
      a line), keyed by the rows' field ``table_key``. It is read in full
      before the first item is handled, and read again when the file
      changes (checked every ``reload_interval``); a new version that
      cannot be read is logged and the table in use is kept.
    * a Kafka topic (``topic``), typically compacted: each record's value
      (a JSON object) is the row of its record key, and a record with no
      value (a tombstone) deletes its key. The topic is read from the
      start, every partition, outside any consumer group, in a thread;
      the first item waits until the reader has caught up with the end of
      the topic as it was at the start, and the table is kept up to date
      from then on.

    Each item (a mapping) is looked up by its field ``on``: keys compare as
    text, so the CSV cell ``7``, the record key ``b"7"`` and the JSON
    number ``7`` are one key. A row found adds its fields (all but
    ``table_key``, or only ``fields``) to a copy of the item, replacing
    fields of the same name. An item with no row is sent on unchanged
    (``on_miss: pass``), dropped (``drop``: counted in ``misses`` and
    logged at debug level), or fails (``fail``: :class:`MissingRow`, which
    the node's ``on_error`` handles).

    The table is not the node's checkpointed state: it is read again from
    its file or topic on every start.

    Errors: setup raises ``OSError`` for a file that cannot be read,
    ``ValueError`` naming the file and line of a bad row,
    ``ConnectionError`` naming ``bootstrap_servers`` for a broker that
    cannot be reached, and ``LookupError`` for a topic that does not exist.
    An item without the field ``on`` is a ``KeyError`` for its ``on_error``.
    """

    on: str = attrs.field(
        validator=v.instance_of(str),
        metadata={"description": "The field of each item whose value is looked up."},
    )
    path: str | None = attrs.field(
        default=None,
        validator=v.optional(v.instance_of(str)),
        metadata={
            "description": "The table's file: CSV (a .csv name, with a header line) or "
            "JSON Lines (any other name). Give path or topic."
        },
    )
    table_key: str | None = attrs.field(
        default=None,
        validator=v.optional(v.instance_of(str)),
        metadata={
            "description": "The field of the file's rows that keys the table; empty means "
            "the same name as on. A topic's rows are keyed by their record key."
        },
    )
    topic: str | None = attrs.field(
        default=None,
        validator=v.optional(v.instance_of(str)),
        metadata={
            "description": "A Kafka topic (compacted, typically) whose records are the "
            "table: the record key is the row's key, the value a JSON object, no value "
            "deletes the key. Give path or topic."
        },
    )
    bootstrap_servers: str | None = _bootstrap_servers_field()
    consumer_config: dict[str, Any] = attrs.field(
        factory=dict,
        validator=_settings_validator("KafkaConsumer", _TOPIC_READER_OWNED),
        metadata={
            "description": "Further kafka-python KafkaConsumer settings for reading the "
            "topic (security_protocol, sasl_mechanism, ...), passed through."
        },
    )
    fields: list[str] | None = attrs.field(
        default=None,
        validator=collection,
        metadata={"description": "The row's fields to add; empty means all but its key."},
    )
    on_miss: Literal["pass", "drop", "fail"] = attrs.field(
        default="pass",
        validator=v.in_(("pass", "drop", "fail")),
        metadata={
            "description": "What happens to an item whose key has no row: pass (sent on "
            "unchanged), drop (counted and logged), fail (an error the node's on_error "
            "handles)."
        },
    )
    reload_interval: Duration = attrs.field(
        default=1.0,
        converter=duration,
        metadata={
            "description": "How often the file is checked for a new version (a duration "
            "such as 1s or 5m); 0 reads it once."
        },
    )
    #: Items dropped under ``on_miss: drop``.
    misses: int = attrs.field(default=0, init=False)
    #: How many times the table was read in full (from its file).
    loads: int = attrs.field(default=0, init=False)
    _table: Table = attrs.field(factory=dict, init=False, repr=False)
    _stop: threading.Event = attrs.field(factory=threading.Event, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.path is None and self.topic is None:
            raise ValueError(
                "Lookup needs a table: give path (a CSV or JSON Lines file) or topic "
                "(a Kafka topic)"
            )
        if self.path is not None and self.topic is not None:
            raise ValueError("Lookup reads its table from path or from topic, not both")
        if self.path is not None and (self.consumer_config or self.bootstrap_servers):
            raise ValueError("consumer_config and bootstrap_servers are for a topic, not a path")
        if self.topic is not None and self.table_key is not None:
            raise ValueError("table_key is for a file: a topic's rows are keyed by record key")

    async def setup(self) -> None:
        self._stop.clear()
        if self.path is not None:
            loaded = await self._load_file()
            if self.reload_interval > 0:
                node_nursery().start_soon(self._watch_file, loaded)
        else:
            await self._follow_topic()

    def process_item(self, message: Any) -> Any:
        try:
            value = message[self.on]
        except (KeyError, TypeError):
            raise KeyError(f"the item has no field {self.on!r} (on)") from None
        row = self._table.get(_key_text(value))
        if row is None:
            if self.on_miss == "pass":
                return message
            if self.on_miss == "drop":
                self.misses += 1
                logger.debug("Lookup: no row for %r; the item is dropped", value)
                return None
            raise MissingRow(f"no row for {self.on} {value!r} in the table")
        if self.fields is None:
            key = self.table_key or self.on
            added = {name: cell for name, cell in row.items() if name != key}
        else:
            added = {name: row[name] for name in self.fields if name in row}
        return {**message, **added}

    def teardown(self) -> None:
        self._stop.set()
        if self.misses:
            logger.info("Lookup: %d items with no row were dropped", self.misses)

    # ---------------------------------------------------------------- a file

    async def _load_file(self) -> tuple[int, int, int] | None:
        """Read the file into the table, in a thread; return the version
        read (its signature, taken before reading: a change while it is read
        is seen as a change, and read again)."""
        path, key = self.path, self.table_key or self.on
        assert path is not None

        def load() -> tuple[tuple[int, int, int] | None, Table]:
            return _signature(path), read_table(path, key)

        signature, self._table = await trio.to_thread.run_sync(load)
        self.loads += 1
        return signature

    async def _watch_file(self, seen: tuple[int, int, int] | None) -> None:
        """Read the file again whenever it changes from the version ``seen``;
        keep the table in use if the new version cannot be read."""
        path = self.path
        assert path is not None
        while True:
            await trio.sleep(self.reload_interval)
            now = await trio.to_thread.run_sync(_signature, path)
            if now is None or now == seen:
                continue
            try:
                seen = await self._load_file()
            except (OSError, ValueError) as error:
                seen = now
                logger.error("Lookup: %s; the table read before stays in use", error)
            else:
                logger.info("Lookup: read %s again (%d rows)", path, len(self._table))

    # ---------------------------------------------------------------- a topic

    async def _follow_topic(self) -> None:
        """Start reading the topic in a thread; return once it has read up
        to where the topic ended when it started."""
        import kafka

        _quiet_kafka_logs()
        servers = _resolve_bootstrap_servers(self.bootstrap_servers)
        consumer = await _connect(
            servers,
            lambda: kafka.KafkaConsumer(
                **self.consumer_config,
                bootstrap_servers=servers,
                enable_auto_commit=False,
                group_id=None,
            ),
        )
        caught_up = trio.Event()
        failure: list[BaseException] = []

        def signal(error: BaseException | None = None) -> None:
            if error is not None:
                failure.append(error)
            trio.from_thread.run_sync(caught_up.set)

        node_nursery().start_soon(self._read_topic, consumer, signal)
        await caught_up.wait()
        if failure:
            raise failure[0]

    async def _read_topic(self, consumer: Any, signal: Callable[..., None]) -> None:
        await trio.to_thread.run_sync(
            _TopicReader(consumer, self.topic, self._table, self._stop).run,
            signal,
            abandon_on_cancel=True,
        )


class _TopicReader:
    """Reads a topic from the start into a table until told to stop, in its own thread."""

    def __init__(self, consumer: Any, topic: str | None, table: Table, stop: threading.Event):
        self.consumer = consumer
        self.topic = topic
        self.table = table
        self.stop = stop

    def run(self, signal: Callable[..., None]) -> None:
        import kafka

        consumer = self.consumer
        try:
            try:
                found = consumer.partitions_for_topic(self.topic)
                if not found:
                    raise LookupError(f"topic {self.topic!r} does not exist (topic)")
                partitions = [kafka.TopicPartition(self.topic, p) for p in sorted(found)]
                consumer.assign(partitions)
                consumer.seek_to_beginning(*partitions)
                end = consumer.end_offsets(partitions)
            except Exception as error:
                signal(error)
                return
            waiting = True
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self.apply(record)
                if waiting and all(consumer.position(p) >= end[p] for p in partitions):
                    waiting = False
                    signal()
        finally:
            consumer.close()

    def apply(self, record: Any) -> None:
        """One record: its row replaces its key's, or a tombstone deletes it."""
        if record.key is None:
            logger.warning(
                "Lookup: %s[%d] offset %d has no key; skipped",
                record.topic,
                record.partition,
                record.offset,
            )
            return
        key = _key_text(record.key)
        if record.value is None:
            self.table.pop(key, None)
            return
        try:
            row = json.loads(record.value)
            if not isinstance(row, dict):
                raise ValueError(f"a row is a JSON object, not {type(row).__name__}")
        except ValueError as error:
            logger.warning(
                "Lookup: %s[%d] offset %d is not a JSON object (%s); skipped",
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            return
        self.table[key] = row
