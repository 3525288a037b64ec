"""Parsing CSV text into rows."""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import attrs

from .._params import collection, known_encoding
from .._processor import NanoStreamProcessor
from . import _csv
from .files import FileData

#: How many line streams (files read line by line) keep their header and
#: line count at once; the least recently seen is forgotten first.
_MAX_LINE_SOURCES = 1024


@attrs.define
class _LineSource:
    """What CsvParser keeps of one stream of lines: its column names (None
    while its header is still to come), its lines so far, and the start of
    a row whose quoted field goes on over the next line."""

    names: list[str] | None
    lines: int = 0
    pending: str | None = None
    pending_from: int = 0


@attrs.define
class CsvParser(_csv.CsvDialect, NanoStreamProcessor):
    """Parses CSV text into rows: dicts keyed by the header (or ``fieldnames``),
    or lists of strings without either.

    An item of several lines (a whole file, as ``FileReader`` reads it in
    ``text`` mode) is a complete CSV text and its first row is its header.
    An item of one line (``FileReader`` in ``lines`` mode, a message from a
    socket) is a row of a longer text: with ``header``, the first line of
    each file (of the whole stream, for plain strings) is the header, and a
    quoted field that goes on over several lines is joined up (with a
    newline) before its row is sent. A ``FileData`` item gives
    ``FileData(path, row)`` rows, so the file's name travels on. Bytes are
    decoded with ``encoding``. A byte order mark at the start of a text (or
    of the first line of a stream) is dropped.

    A row whose field count differs from the header's, or with broken
    quoting, is an error naming its line, handled by the node's
    ``on_error``; an item of several lines with a bad row sends none of its
    rows. For a large file, ``FileReader`` in ``csv`` mode, with the same
    dialect options, streams rows without holding the file in memory.
    """

    header: bool = attrs.field(
        default=True,
        metadata={
            "description": "The first row is a header. With fieldnames too, it is skipped"
            " and fieldnames name the columns."
        },
    )
    fieldnames: list[str] | None = attrs.field(
        default=None,
        validator=collection,
        metadata={"description": "The column names; rows are then dicts even without a header."},
    )
    encoding: str = attrs.field(
        default="utf-8",
        validator=known_encoding,
        metadata={
            "description": "How bytes items are decoded; with UTF-8, a byte order mark"
            " at the start is dropped."
        },
    )
    # For one-line items: per source (a path, or None), what it has told so far.
    _line_sources: OrderedDict[str | None, _LineSource] = attrs.field(
        factory=OrderedDict, init=False, repr=False, eq=False
    )

    def process_item(self, message: Any) -> Iterator[Any]:
        path, text = self._text_of(message)
        if "\n" in text or "\r" in text:
            rows = self._parse_text(text.removeprefix(_csv.BOM), path)
        else:
            row = self._parse_line(text, path)
            rows = [] if row is None else [row]
        if path is None:
            yield from rows
        else:
            for row in rows:
                yield FileData(path, row)

    def _text_of(self, message: Any) -> tuple[str | None, str]:
        path, data = (
            (message.path, message.data) if isinstance(message, FileData) else (None, message)
        )
        if isinstance(data, bytes):
            data = data.decode(_csv.text_codec(self.encoding))
        if not isinstance(data, str):
            what = "FileData holding " if path is not None else ""
            raise TypeError(
                f"CsvParser parses text, not {what}{type(data).__name__}"
                " (FileReader's csv mode already parses rows: use its text or lines mode)"
            )
        return path, data

    def _reader(self, lines: Any) -> Any:
        return _csv.csv_reader(self, lines)

    def _parse_text(self, text: str, path: str | None) -> list[Any]:
        """Every row of a complete CSV text, or an error naming the bad line."""
        reader = self._reader(io.StringIO(text, newline=""))
        names = None if self.header else self.fieldnames
        rows = []
        expect_header = self.header
        while True:
            try:
                row = next(reader, None)
            except csv.Error as error:
                raise ValueError(f"{_where(path, reader.line_num)}: {error}") from error
            if row is None:
                return rows
            if not row:
                continue
            if expect_header:
                names, expect_header = self.fieldnames or row, False
                continue
            rows.append(self._row(row, names, path, reader.line_num))

    def _parse_line(self, line: str, path: str | None) -> Any:
        """The row of one line of a longer text, or None for its header (or
        for a line that ends inside a quoted field, whose row comes with a
        later line)."""
        state = self._line_sources.get(path)
        if state is None:
            state = _LineSource(None if self.header else self.fieldnames)
            self._line_sources[path] = state
            if len(self._line_sources) > _MAX_LINE_SOURCES:
                self._line_sources.popitem(last=False)
        else:
            self._line_sources.move_to_end(path)
        state.lines += 1
        if state.lines == 1:
            line = line.removeprefix(_csv.BOM)
        if state.pending is not None:
            line, number = state.pending + "\n" + line, state.pending_from
            state.pending = None
        else:
            number = state.lines
        try:
            row = next(self._reader([line]), [])
        except csv.Error as error:
            if str(error) == "unexpected end of data" and self.quoting != "none":
                # A quoted field goes on over the next line.
                state.pending, state.pending_from = line, number
                return None
            raise ValueError(f"{_where(path, number)}: {error}") from error
        if not row:
            return None
        if self.header and number == 1:
            state.names = self.fieldnames or row
            return None
        return self._row(row, state.names, path, number)

    def finish(self) -> None:
        """A stream of lines that ends inside a quoted field is an error
        naming the line where the field began."""
        for path, state in self._line_sources.items():
            if state.pending is not None:
                where = _where(path, state.pending_from)
                raise ValueError(f"{where}: a quoted field is never closed")

    def _row(self, row: list[str], names: list[str] | None, path: str | None, line: int) -> Any:
        if names is None:
            return row
        if len(row) != len(names):
            raise ValueError(
                f"{_where(path, line)}: {len(row)} field{'s' if len(row) != 1 else ''}"
                f" where the header has {len(names)} ({', '.join(names)})"
            )
        return dict(zip(names, row, strict=True))


def _where(path: str | None, line: int) -> str:
    return f"line {line} of {path}" if path is not None else f"line {line}"
