"""Standard input and standard output: a source that reads stdin, a sink that writes stdout.

So that a pipeline can sit in a shell pipeline: ``... | nanostream run p.yaml | ...``.
Logs and the live table go to stderr, never to stdout, so stdout carries
data alone.

Both ends block (a pipe fills up, a terminal waits for a line), so reads and
writes are made in a worker thread, one trip per chunk or batch.
"""

from __future__ import annotations

import codecs
import collections
import csv
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import attrs
import trio

from .._params import collection, known_encoding
from .._processor import FailedItems, NanoStreamProcessor, Rejected
from . import _jsonable
from ._csv import _one_character
from .files import FileData, _bad_input

logger = logging.getLogger(__name__)

StdioFormat = Literal["lines", "jsonl", "csv", "bytes"]
_FORMATS = ("lines", "jsonl", "csv", "bytes")

#: The most bytes one read from stdin takes; a read returns what is there.
_READ_SIZE = 1 << 16
#: The most records handed over per trip from the reading thread.
_CHUNK = 1000


class _StdinLines:
    """The lines of a file descriptor, read as they arrive.

    ``os.read`` returns whatever is there, so a line typed on a terminal or
    written by a slow producer is available at once, while a fast pipe is
    read 64 KiB at a time.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ready: collections.deque[bytes] = collections.deque()
        self.rest = b""
        self.at_end = False

    def _fill(self) -> None:
        data = os.read(self.fd, _READ_SIZE)
        if not data:
            self.at_end = True
            if self.rest:
                self.ready.append(self.rest)
                self.rest = b""
            return
        *complete, self.rest = (self.rest + data).split(b"\n")
        self.ready.extend(line + b"\n" for line in complete)

    def __iter__(self) -> Iterator[bytes]:
        """Each line, with its line ending; blocks until one is there or input ends."""
        while True:
            while self.ready:
                yield self.ready.popleft()
            if self.at_end:
                return
            self._fill()

    def read_all(self) -> bytes:
        chunks = [*self.ready, self.rest]
        self.ready.clear()
        self.rest = b""
        while data := os.read(self.fd, _READ_SIZE):
            chunks.append(data)
        self.at_end = True
        return b"".join(chunks)


def _stdin_records(lines: _StdinLines, format: str, encoding: str, delimiter: str) -> Iterator[Any]:
    """The records of stdin; what cannot be decoded comes as :class:`Rejected`
    whose error says the line, in place of its record."""
    if format == "bytes":
        yield lines.read_all()
        return
    if format == "csv":
        yield from _csv_records(lines, encoding, delimiter)
        return
    decoder = codecs.getdecoder(encoding)
    for number, raw in enumerate(lines, start=1):
        try:
            text = decoder(raw)[0].rstrip("\r\n")
        except UnicodeDecodeError as error:
            yield Rejected(
                raw, _bad_input("stdin", number, f"not valid {encoding}: {error.reason}")
            )
            continue
        if format == "lines":
            yield text
        elif text.strip():
            try:
                yield json.loads(text)
            except json.JSONDecodeError as error:
                why = f"not valid JSON: {error.msg} (column {error.colno})"
                yield Rejected(text, _bad_input("stdin", number, why))


def _csv_records(lines: _StdinLines, encoding: str, delimiter: str) -> Iterator[Any]:
    """Rows after the header line, as dicts; a row of the wrong width, or a
    line that does not decode, is rejected on its own."""
    decoder = codecs.getdecoder(encoding)
    undecodable: list[Rejected] = []
    numbers = iter(range(1, 1 << 62))

    def decoded() -> Iterator[str]:
        for raw in lines:
            number = next(numbers)
            try:
                yield decoder(raw)[0]
            except UnicodeDecodeError as error:
                why = f"not valid {encoding}: {error.reason}"
                undecodable.append(Rejected(raw, _bad_input("stdin", number, why)))

    rows = csv.reader(decoded(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    while True:
        try:
            row = next(rows)
        except StopIteration:
            yield from undecodable
            return
        except csv.Error as error:
            yield Rejected(None, _bad_input("stdin", rows.line_num, f"not valid CSV: {error}"))
            continue
        yield from undecodable
        undecodable.clear()
        if not row:
            continue
        if header is None:
            header = row
        elif len(row) != len(header):
            why = f"{len(row)} fields where the header has {len(header)}"
            yield Rejected(row, _bad_input("stdin", rows.line_num, why))
        else:
            yield dict(zip(header, row, strict=True))


def _take_ready(records: Iterator[Any], lines: _StdinLines) -> list[Any]:
    """The next record (waiting for it), then those already read, up to a chunk.

    Never waits for more input once it has a record, so a line that arrives
    alone goes on at once."""
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= _CHUNK or not lines.ready:
            break
    return chunk


@attrs.define
class StdinReader(NanoStreamProcessor):
    """Emits what arrives on standard input, record by record, until it ends.

    ``lines``: each line as a str, without its line ending; ``jsonl``: each
    non-blank line parsed as JSON; ``csv``: each row after the header as a
    dict from the header's names; ``bytes``: all of stdin as one bytes item,
    once it ends. Records go on as soon as their line is complete, so a
    slow producer upstream is followed line by line.

    A line that is not valid text in ``encoding``, not JSON (``jsonl``), or
    a row of the wrong width (``csv``) is rejected with an error naming its
    line (``stdin:3: not valid JSON: ...``), and the node's ``on_error``
    applies to it; the lines around it go on. Standard input cannot be
    acknowledged: what is read and not yet handled when the run stops is
    lost.
    """

    format: StdioFormat = attrs.field(
        default="lines",
        validator=attrs.validators.in_(_FORMATS),
        metadata={
            "description": "lines: one str per line; jsonl: one JSON value per line; csv: one"
            " dict per row after the header; bytes: all of stdin as one item."
        },
    )
    encoding: str = attrs.field(
        default="utf-8",
        validator=known_encoding,
        metadata={"description": "Encoding of the text on stdin."},
    )
    delimiter: str = attrs.field(
        default=",",
        validator=_one_character,
        metadata={"description": "With csv: the character between fields."},
    )

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        lines = _StdinLines(sys.stdin.fileno())
        records = _stdin_records(lines, self.format, self.encoding, self.delimiter)
        while True:
            # Abandoned on cancellation: a read from a terminal or an idle
            # pipe cannot be interrupted, and must not hold up a drain.
            chunk = await trio.to_thread.run_sync(
                _take_ready, records, lines, abandon_on_cancel=True
            )
            if not chunk:
                return
            yield chunk


def _data(item: Any) -> Any:
    return item.data if isinstance(item, FileData) else item


def _as_text(item: Any) -> str:
    data = _data(item)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)


class _StdoutClosed(Exception):
    """Standard output's reader has gone away (a broken pipe)."""


@attrs.define
class StdoutWriter(NanoStreamProcessor):
    """Writes each item to standard output; each batch is flushed as it is written.

    ``lines``: ``str(item)`` and a newline; ``jsonl``: the item as one line
    of JSON (dates and times in ISO 8601, decimals as numbers); ``csv``:
    dicts (or lists) as rows, after a header of ``fieldnames``, by default
    the keys of the first dict; ``bytes``: the
    item's bytes as they are (text as UTF-8), nothing between items. A
    ``FileData`` from ``FileReader`` is written as its data.

    An item that cannot be written that way (an object JSON cannot hold, a
    dict with a key not in the header) fails alone, under the node's
    ``on_error``; the others of its batch are written.

    When the reader of standard output goes away (``| head`` has read
    enough), the pipeline stops as on SIGTERM: the sources stop, the items
    in flight drain, and ``nanostream run`` exits with 0 and no traceback;
    the items that reach this node after that are dropped, and counted in
    a log line. A program that runs a graph without handling signals gets a
    ``BrokenPipeError`` from this node instead.
    """

    format: StdioFormat = attrs.field(
        default="lines",
        validator=attrs.validators.in_(_FORMATS),
        metadata={
            "description": "lines: str(item) per line; jsonl: one JSON value per line; csv:"
            " one row per dict or list; bytes: each item's bytes as they are."
        },
    )
    fieldnames: list[str] | None = attrs.field(
        default=None,
        validator=collection,
        metadata={
            "description": "With csv: the columns, in order. Default: the keys of the first"
            " dict written."
        },
    )
    header: bool = attrs.field(
        default=True, metadata={"description": "With csv: write a header line first."}
    )
    delimiter: str = attrs.field(
        default=",",
        validator=_one_character,
        metadata={"description": "With csv: the character between fields."},
    )

    _columns: list[str] | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_columns"
    )
    _closed: bool = attrs.field(default=False, init=False, repr=False, eq=False, alias="_closed")
    _dropped: int = attrs.field(default=0, init=False, repr=False, eq=False, alias="_dropped")

    def _encode(self, item: Any) -> bytes:
        if self.format == "lines":
            return (_as_text(item) + "\n").encode("utf-8")
        if self.format == "jsonl":
            return (_jsonable.dumps(_data(item)) + "\n").encode("utf-8")
        if self.format == "bytes":
            data = _data(item)
            return bytes(data) if isinstance(data, bytes | bytearray) else str(data).encode()
        return self._csv_row(_data(item))

    def _csv_row(self, row: Any) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator="\n")
        if self._columns is None:
            if self.fieldnames is not None:
                self._columns = list(self.fieldnames)
            elif isinstance(row, dict):
                self._columns = [str(key) for key in row]
            else:
                self._columns = []
            if self.header and self._columns:
                writer.writerow(self._columns)
        if isinstance(row, dict):
            unknown = [key for key in row if key not in self._columns]
            if unknown:
                raise ValueError(f"keys {unknown} are not among the columns {self._columns}")
            writer.writerow([row.get(column, "") for column in self._columns])
        elif isinstance(row, list | tuple):
            writer.writerow(row)
        else:
            raise TypeError(f"a csv row must be a dict or a list, not {type(row).__name__}")
        return out.getvalue().encode("utf-8")

    def _write_batch(self, messages: list[Any]) -> None:
        chunks, errors = [], {}
        for index, message in enumerate(messages):
            try:
                chunks.append(self._encode(message))
            except (TypeError, ValueError) as error:
                errors[index] = error
        try:
            _write_stdout(b"".join(chunks))
        except BrokenPipeError:
            raise _StdoutClosed from None
        if errors:
            raise FailedItems(errors)

    async def process_batch(self, messages: list[Any]) -> None:
        if self._closed:
            self._dropped += len(messages)
            return
        try:
            await trio.to_thread.run_sync(self._write_batch, messages)
        except _StdoutClosed:
            self._closed = True
            self._dropped += len(messages)
            _stop_on_closed_stdout()

    def teardown(self) -> None:
        if self._dropped:
            logger.warning(
                "stdout was closed by its reader: %d items were not written",
                self._dropped,
                extra={"event": "stdout_closed", "count": self._dropped},
            )


def _write_stdout(data: bytes) -> None:
    """Write ``data`` to standard output at once: through ``sys.stdout`` on a
    terminal (where a live display may be drawn around it), else to its
    file descriptor, unbuffered."""
    stdout = sys.stdout
    if stdout.isatty():
        stdout.write(data.decode("utf-8", errors="replace"))
        stdout.flush()
        return
    stdout.flush()
    fd = stdout.fileno()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _stop_on_closed_stdout() -> None:
    """Stop the pipeline because nobody reads standard output any more.

    Standard output is pointed at /dev/null, so that nothing written later
    (the interpreter's last flush) fails again. If the process turns
    SIGTERM into a drain (``nanostream run``, ``nanostream.run``), the
    pipeline is drained as a Unix tool stops on SIGPIPE; otherwise the
    broken pipe is this node's error.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    if callable(signal.getsignal(signal.SIGTERM)):
        logger.info("stdout was closed by its reader: stopping", extra={"event": "stdout_closed"})
        signal.raise_signal(signal.SIGTERM)
    else:
        raise BrokenPipeError("stdout was closed by its reader")
