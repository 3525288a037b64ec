"""Nodes that read files and write files."""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import ctypes
import errno
import itertools
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import attrs
import trio

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are not locked
    fcntl = None  # type: ignore[assignment]

from .._params import known_encoding, positive
from .._processor import DeadLetter, FailedItems, NanoStreamProcessor
from . import _csv

logger = logging.getLogger("nanostream")

#: How many records a streaming read hands over per trip from its thread.
_CHUNK = 2048

#: How many bytes the streaming modes read and decode at a time.
_BLOCK = 16 * 1024

#: The default longest line the streaming modes read: 16 MiB.
_MAX_LINE_BYTES = 16 * 1024 * 1024


@attrs.frozen
class FileData:
    """Something read from a file, with the path of that file, so that a
    writer downstream can name its output after it. ``index`` is the
    position of a record (line or row) in the file, counting from 0, and
    ``None`` when ``data`` is the whole file. ``str()`` is the data."""

    path: str
    data: Any
    index: int | None = None

    def __str__(self) -> str:
        if isinstance(self.data, bytes):
            return self.data.decode("utf-8", errors="replace")
        return str(self.data)


def _bad_input(path: str, line: int, why: str) -> ValueError:
    """The error for content that cannot be read, saying where: ``path:line: why``."""
    return ValueError(f"{path}:{line}: {why}")


def _undecodable(path: str, line: int, encoding: str, error: UnicodeDecodeError) -> ValueError:
    return _bad_input(path, line, f"not valid {encoding}: {error.reason}")


def _whole(path: str, mode: str, encoding: str) -> str | bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if mode == "bytes":
        return raw
    try:
        return raw.decode(_csv.text_codec(encoding))
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise _undecodable(path, line, encoding, error) from None


def _line_blocks(path: str, encoding: str, max_line_bytes: int) -> Iterator[list[str]]:
    """The lines of a text file, line endings kept, in lists: one per block read.

    The file is read and decoded ``_BLOCK`` bytes at a time, for speed; only
    a block with an invalid byte is decoded again line by line, so that the
    error names its line and the lines before it are still yielded. A line
    is bad input as soon as it is longer than ``max_line_bytes`` (its
    newline aside), before more of it is read, so a file with no line
    breaks is an error, not a read of the whole file into memory. Lines end
    at ``\\n`` only, as for ``readline``.
    """
    decoder = codecs.getincrementaldecoder(_csv.text_codec(encoding))()
    number = 0  # lines yielded so far
    pending = ""  # the start of a line that ends in a later block
    pending_bytes = 0
    # A line that starts and ends in one block is no longer than the block.
    size = min(_BLOCK, max_line_bytes + 1)
    with open(path, "rb") as f:
        while raw := f.read(size):
            first = raw.find(b"\n")
            if pending_bytes + (len(raw) if first < 0 else first) > max_line_bytes:
                why = f"a line longer than max_line_bytes ({max_line_bytes} bytes)"
                raise _bad_input(path, number + 1, why)
            state = decoder.getstate()
            try:
                text = pending + decoder.decode(raw)
            except UnicodeDecodeError:
                decoder.setstate(state)
                lines, error = _lines_before_bad_byte(raw, decoder, pending)
                if lines:
                    yield lines
                raise _undecodable(path, number + len(lines) + 1, encoding, error) from None
            if first < 0:
                pending = text
                pending_bytes += len(raw)
                continue
            lines = text.split("\n")
            pending = lines.pop()
            pending_bytes = len(raw) - raw.rfind(b"\n") - 1
            number += len(lines)
            yield [line + "\n" for line in lines]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield [pending]


def _lines_before_bad_byte(
    raw: bytes, decoder: Any, pending: str
) -> tuple[list[str], UnicodeDecodeError]:
    """The whole lines of ``raw`` (a block that does not decode) before its
    bad one, decoded by ``decoder`` (in its state from before ``raw``), and
    the error of the bad one."""
    lines = []
    *complete, rest = raw.split(b"\n")
    for part in [*(line + b"\n" for line in complete), rest]:
        try:
            pending += decoder.decode(part)
        except UnicodeDecodeError as error:
            return lines, error
        if pending.endswith("\n"):
            lines.append(pending)
            pending = ""
    raise AssertionError("a block that failed to decode decoded line by line")


def _records(reader: FileReader, path: str) -> Iterator[list[Any]]:
    """The records of the file ``path`` in ``reader``'s mode, in lists: one
    per block read (lines, jsonl) or per ``_CHUNK`` rows (csv), so that a
    record costs no step of a generator of its own."""
    blocks = _line_blocks(path, reader.encoding, reader.max_line_bytes)
    if reader.mode == "lines":
        for block in blocks:
            yield [line.rstrip("\r\n") for line in block]
    elif reader.mode == "jsonl":
        number = 0
        for block in blocks:
            records = []
            for line in block:
                number += 1
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield records
                    why = f"not valid JSON: {error.msg} (column {error.colno})"
                    raise _bad_input(path, number, why) from None
                if record is None:  # None is never an item: it would vanish
                    yield records
                    raise _bad_input(path, number, "null, and None is never an item")
                records.append(record)
            yield records
    elif reader.mode == "csv":
        yield from _csv_rows(reader, path, itertools.chain.from_iterable(blocks))
    else:  # pragma: no cover - attrs validator
        raise ValueError(f"unknown mode {reader.mode!r}")


def _csv_rows(
    reader: FileReader, path: str, lines: Iterator[str]
) -> Iterator[list[dict[str, str]]]:
    """The rows after the header line, as dicts, in lists of up to
    ``_CHUNK``. A row with more or fewer fields than the header, or a
    header naming a column twice, is an error, not a row padded, cut or
    merged silently; the rows before it are yielded first. Blank lines are
    skipped, before the header too."""
    rows = _csv.csv_reader(reader, lines)
    try:
        header = next((row for row in rows if row), None)
    except csv.Error as error:
        raise _bad_input(path, rows.line_num, f"not valid CSV: {error}") from None
    if header is None:
        return
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise _bad_input(path, rows.line_num, f"the header repeats {', '.join(repeated)}")
    columns = itertools.repeat(header)
    while True:
        parsed, error, more = _csv_some(rows, len(header), path)
        yield list(map(dict, map(zip, columns, parsed)))
        if error is not None:
            raise error
        if not more:
            return


def _csv_some(rows: Any, width: int, path: str) -> tuple[list[list[str]], ValueError | None, bool]:
    """Up to ``_CHUNK`` rows of the ``csv.reader`` ``rows``, blank lines
    skipped; the error of a bad row, which ends them; and whether there
    may be more rows after them."""
    parsed: list[list[str]] = []
    append = parsed.append
    blank = 0
    try:
        for row in itertools.islice(rows, _CHUNK):
            if len(row) != width:
                if row:
                    why = f"{len(row)} fields where the header has {width}"
                    return parsed, _bad_input(path, rows.line_num, why), False
                blank += 1
                continue
            append(row)
    except csv.Error as error:
        return parsed, _bad_input(path, rows.line_num, f"not valid CSV: {error}"), False
    return parsed, None, len(parsed) + blank == _CHUNK


@attrs.define
class FileReader(_csv.CsvDialect, NanoStreamProcessor):
    """Reads the file each item names and emits its content, whole or record by record.

    The content goes out as ``FileData(path, data, index)``: the whole text or
    bytes, or one record per line (``lines``, ``jsonl``) or row (``csv``, as a
    dict, checked against the header), streamed without holding the file in
    memory. With ``path`` set, that file is read for every item.

    Text is decoded with ``encoding``; for UTF-8 (the default), a byte order
    mark at the start of the file is dropped. A line longer than
    ``max_line_bytes`` is bad input, as is text that is not valid in
    ``encoding``, JSON or CSV: an error of that one item, handled by the
    node's ``on_error``, whose message names the file and line. Records sent
    on before the bad line stay sent; those not yet sent go with the failed
    item. A file gone before it is read (deleted or renamed since its path
    was emitted) sends nothing and is logged at debug level."""

    mode: Literal["text", "bytes", "lines", "jsonl", "csv"] = attrs.field(
        default="text",
        validator=attrs.validators.in_(("text", "bytes", "lines", "jsonl", "csv")),
        metadata={
            "description": "text or bytes: one item per file; lines, jsonl, csv:"
            " one item per line or row."
        },
    )
    encoding: str = attrs.field(
        default="utf-8",
        validator=known_encoding,
        metadata={
            "description": "Encoding of text files. With UTF-8, a byte order mark at the"
            " start of a file is dropped."
        },
    )
    path: str | None = attrs.field(
        default=None,
        metadata={"description": "Read this file for every item instead of the path it names."},
    )
    max_line_bytes: int = attrs.field(
        default=_MAX_LINE_BYTES,
        validator=[attrs.validators.instance_of(int), positive],
        metadata={
            "description": "lines, jsonl, csv: the longest line read, in bytes; a longer"
            " one is bad input, so a file without line breaks cannot fill the memory."
        },
    )

    @property
    def process_batch(self) -> Callable[[list[Any]], Any] | None:
        # Whole files are read a batch per trip to a worker thread; records
        # stream file by file through process_item. A property, because the
        # runtime takes process_batch over process_item when it is there.
        return self._read_whole_files if self.mode in ("text", "bytes") else None

    def _path_of(self, message: Any) -> str:
        return self.path if self.path is not None else str(message)

    async def _read_whole_files(self, messages: list[Any]) -> list[FileData]:
        return await trio.to_thread.run_sync(self._read_files, messages)

    def _read_files(self, messages: list[Any]) -> list[FileData]:
        return [data for data in _each_alone(self._read_file, messages) if data is not None]

    def _read_file(self, message: Any) -> FileData | None:
        path = self._path_of(message)
        try:
            return FileData(path, _whole(path, self.mode, self.encoding))
        except FileNotFoundError:
            if not self._may_be_gone(path):
                raise
            return None

    def _may_be_gone(self, path: str) -> bool:
        """Whether ``path``, not found, is a file gone since its path was
        emitted (logged at debug level), rather than a fixed ``path`` that
        is missing (an error)."""
        if self.path is not None:
            return False
        logger.debug(
            "%s is gone before it was read", path, extra={"event": "file_gone", "path": path}
        )
        return True

    async def process_item_batches(self, message: Any) -> AsyncIterator[list[FileData]]:
        # The records are read and wrapped in a worker thread a chunk per
        # trip, and each chunk goes on whole: the runtime can send it on
        # before the file is done, with no step of a generator per record.
        path = self._path_of(message)
        chunks = _Chunks(self, path)
        try:
            while not chunks.done:
                try:
                    chunk = await trio.to_thread.run_sync(chunks.next)
                except FileNotFoundError:
                    if chunks.count or not self._may_be_gone(path):
                        raise
                    return
                if chunk:
                    yield chunk
        finally:
            chunks.close()

    async def process_item(self, message: Any) -> AsyncIterator[FileData]:
        """The records of the file ``message`` names, one by one, as the
        runtime sends them on (it takes them a chunk at a time, from
        :meth:`process_item_batches`)."""
        async with contextlib.aclosing(self.process_item_batches(message)) as chunks:
            async for chunk in chunks:
                for record in chunk:
                    yield record


class _Chunks:
    """The records of one file as ``FileData``, a chunk per call of
    :meth:`next` (made in a worker thread), numbered from 0."""

    def __init__(self, reader: FileReader, path: str) -> None:
        self._records = _records(reader, path)
        self._path = path
        #: The records made so far.
        self.count = 0
        self._error: Exception | None = None
        #: Whether the file has been read to its end.
        self.done = False

    def next(self) -> list[FileData]:
        """The next ``_CHUNK`` records or more, fewer at the end of the
        file. Bad input is raised after the records before it."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        chunk: list[Any] = []
        try:
            for some in self._records:
                chunk += some
                if len(chunk) >= _CHUNK:
                    break
            else:
                self.done = True
        except Exception as error:
            if not chunk:
                raise
            self._error = error
        made = _file_data(self._path, chunk, self.count)
        self.count += len(made)
        return made

    def close(self) -> None:
        self._records.close()


def _file_data(path: str, records: list[Any], start: int) -> list[FileData]:
    """``FileData(path, record, index)`` for each record, numbered from ``start``.

    Made by filling the slots of new instances directly, a slot across all
    of them at a time, with no Python frame per record: a frozen attrs
    class's ``__init__`` goes through ``object.__setattr__`` per field,
    which costs as much as parsing a small record."""
    count = len(records)
    made = list(map(_new_instance, itertools.repeat(FileData, count)))
    _each(map(_set_path, made, itertools.repeat(path, count)))
    _each(map(_set_data, made, records))
    _each(map(_set_index, made, range(start, start + count)))
    return made


def _each(calls: Iterator[Any]) -> None:
    """Make every call of ``calls`` (a lazy ``map``), keeping no result."""
    collections.deque(calls, maxlen=0)


_new_instance = object.__new__
_set_path = FileData.path.__set__  # type: ignore[attr-defined]
_set_data = FileData.data.__set__  # type: ignore[attr-defined]
_set_index = FileData.index.__set__  # type: ignore[attr-defined]


_JSON = json.JSONEncoder(ensure_ascii=False)


def _json_encoder() -> Callable[[Any], str]:
    """A function giving ``json.dumps(value, ensure_ascii=False)``, for one
    batch of values.

    ``json.dumps`` with any argument, and ``JSONEncoder.encode`` with any
    setting, build the json module's C encoder (``c_make_encoder``) anew for
    each value, which costs about as much as encoding a small record. This
    builds it once, with the arguments ``JSONEncoder.iterencode`` gives it.
    A call that fails can leave the encoder's record of the containers it
    was inside (for detecting cycles) behind, so one is made per batch, not
    kept. Without the C encoder, it is ``JSONEncoder.encode``."""
    make = json.encoder.c_make_encoder
    if make is None:  # pragma: no cover - CPython has _json
        return _JSON.encode
    encode = make(
        {},
        _JSON.default,
        json.encoder.encode_basestring,
        None,
        _JSON.key_separator,
        _JSON.item_separator,
        _JSON.sort_keys,
        _JSON.skipkeys,
        _JSON.allow_nan,
    )
    return lambda value: "".join(encode(value, 0))


def _as_line(item: Any, to_json: Callable[[Any], str]) -> str:
    if isinstance(item, DeadLetter):
        return _dead_letter_line(item)
    data = item.data if isinstance(item, FileData) else item
    if isinstance(data, (dict, list)):
        return to_json(data)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)


def _dead_letter_line(letter: DeadLetter) -> str:
    """A dead letter as a JSON object; an item JSON cannot hold is written as its repr."""
    error = f"{type(letter.error).__name__}: {letter.error}"
    fields = {"node": letter.node, "error": error, "item": letter.item}
    return json.dumps(fields, ensure_ascii=False, default=repr)


#: The fields a FileWriter ``file_name`` template may use.
_NAME_FIELDS = ("name", "stem", "suffix", "index", "uuid")


def _name_fields(item: Any) -> dict[str, Any]:
    """What a ``file_name`` template can say about ``item``."""
    unique = uuid.uuid4().hex
    if isinstance(item, FileData):
        name = os.path.basename(item.path)
        index = item.index
    else:
        name, index = f"{unique}.txt", None
    stem, suffix = os.path.splitext(name)
    return {"name": name, "stem": stem, "suffix": suffix, "index": index or 0, "uuid": unique}


def _check_template(template: str) -> None:
    """Raise ValueError if ``template`` cannot make a file name."""
    sample = dict.fromkeys(_NAME_FIELDS, "x")
    try:
        name = template.format(**sample)
    except KeyError as error:
        known = ", ".join("{" + field + "}" for field in _NAME_FIELDS)
        raise ValueError(f"unknown field {{{error.args[0]}}}; the fields are {known}") from None
    except (IndexError, ValueError) as error:
        raise ValueError(f"not a valid template: {error}") from None
    if name in ("", ".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"{template!r} does not make a file name (no '/', not empty)")


def _validate_template(_: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        try:
            _check_template(value)
        except ValueError as error:
            raise ValueError(f"{attribute.name} template {value!r}: {error}") from None


def _payload(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (dict, list)):
        data = _json_encoder()(data) + "\n"
    return str(data).encode("utf-8")


def _each_alone(function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``function`` of each item, where one item's failure is its own: the
    others are done all the same, and the failures are raised together as
    :class:`FailedItems`, so the error policy applies to those items alone."""
    results, errors = [], {}
    for index, item in enumerate(items):
        try:
            results.append(function(item))
        except Exception as error:
            errors[index] = error
    if errors:
        raise FailedItems(errors, results)
    return results


def _rename_without_replacing(source: str, target: str) -> None:
    """Rename ``source`` to ``target``, or raise FileExistsError if ``target``
    exists: one step, so two writers can never both take one name.

    Linux's ``renameat2(RENAME_NOREPLACE)`` does it, reported to inotify as
    a move like any rename. Where the filesystem (or system) lacks it, a
    hard link, which fails on a taken name, then the unlink of ``source``
    do it; a watcher sees that file created, not moved in."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), 1) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
            raise OSError(code, os.strerror(code), target)
    os.link(source, target)
    os.unlink(source)


def _load_renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc 2.28+ or musl 1.2.2+
        return None
    path, number = ctypes.c_char_p, ctypes.c_int
    function.argtypes = [number, path, number, path, ctypes.c_uint]
    return function


_AT_FDCWD = -100
_renameat2 = _load_renameat2()


def _numbered(name: str, number: int, name_max: int) -> str:
    """``{stem}.{number}{suffix}``, the stem cut short (whole characters) if
    the name would be longer than ``name_max`` bytes."""
    stem, suffix = os.path.splitext(name)
    tail = f".{number}{suffix}"
    room = name_max - len(os.fsencode(tail))
    encoded = os.fsencode(stem)
    if len(encoded) > room > 0:
        stem = encoded[:room].decode(sys.getfilesystemencoding(), errors="ignore")
    return stem + tail


def _move_under_free_name(
    source: str, directory: str, name: str, after: int = 0
) -> tuple[str, int]:
    """Move ``source`` into ``directory`` as ``name``, or, if that is taken,
    as the first free ``{stem}.{n}{suffix}`` with ``n`` above ``after``;
    return the name and ``n`` (0 for ``name`` itself). Each name is claimed
    atomically, so nothing taken is ever replaced, whoever else is writing."""
    name_max = 0
    for number in itertools.chain([0], itertools.count(after + 1)):
        if number == 0:
            candidate = name
        else:
            name_max = name_max or os.pathconf(directory, "PC_NAME_MAX")
            candidate = _numbered(name, number, name_max)
        try:
            _rename_without_replacing(source, os.path.join(directory, candidate))
            return candidate, number
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover


def _write_atomically(
    directory: str,
    name: str,
    data: Any,
    *,
    fsync: bool = True,
    replace: bool = True,
    after: int = 0,
) -> tuple[str, int]:
    """Write ``data`` as the file ``name`` in ``directory`` so that no reader
    ever sees it half written: into a temporary file there, then renamed.

    The file of that name is replaced; without ``replace``, a taken name
    is left alone and the data goes under the first free numbered name
    (see :func:`_move_under_free_name`, which ``after`` is passed to).
    Returns the name written and its number.
    """
    payload = _payload(data)
    # Created like any new file (0o666 less the umask), which mkstemp's
    # 0o600 is not. The name is this process's own (its pid and a count),
    # short whatever ``name`` is, hidden, and ends in .tmp; O_EXCL makes
    # sure of it, against a file left by an earlier process of the same
    # pid, by taking the next number.
    prefix = name[:_TEMPORARY_PREFIX]
    while True:
        temporary = os.path.join(directory, f".{prefix}.{os.getpid()}-{next(_temporaries)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            _write_all(fd, payload)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if not replace:
            return _move_under_free_name(temporary, directory, name, after)
        os.replace(temporary, os.path.join(directory, name))
        return name, 0
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


#: Numbers the temporary files of this process (``next`` is atomic under the GIL).
_temporaries = itertools.count()

#: How much of a file's name its temporary file's name repeats, in characters.
_TEMPORARY_PREFIX = 32


def _append_lines(path: str, payload: bytes, fsync: bool) -> None:
    """Append ``payload`` to the file ``path`` whole or not at all.

    The file is locked (``flock``) against other writers of this process or
    any other; if a write fails (a full disk), the file is cut back to its
    length before, so no half line is left for the next one to be glued to."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        length = os.fstat(fd).st_size
        try:
            _write_all(fd, payload)
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, length)
            raise
    finally:
        os.close(fd)


@attrs.define
class FileWriter(NanoStreamProcessor):
    """Writes each item as a file into a directory, or as a line onto one file.

    If ``path`` is a directory (existing, or ending in '/'), each item
    becomes a file there, written atomically: a temporary file, synced
    unless ``fsync`` is off, renamed into place. A whole file read by
    FileReader keeps its name; a record of a file is named
    ``{stem}-{index}{suffix}`` (``data-0.jsonl``, ``data-1.jsonl``, ...);
    anything else gets a new unique name; ``file_name`` sets a template
    instead. A name already taken is never overwritten unless ``overwrite``
    is set: the item gets the first free ``{stem}.{n}{suffix}``
    (``report.1.txt``), each name claimed by a rename that cannot replace a
    file (Linux's ``renameat2`` with ``RENAME_NOREPLACE``), so concurrent
    workers and processes never take the same one.

    Otherwise ``path`` is a file (its folder made if missing) and each item
    is appended to it as one line (JSON for dicts and lists), a batch at a
    time under an exclusive ``flock``; a batch that cannot be written whole
    (a full disk) is cut back off, so the file holds whole lines only. An
    item or batch that cannot be written raises OSError, under ``on_error``."""

    path: str = attrs.field(metadata={"description": "A directory, or a file to append lines to."})
    file_name: str | None = attrs.field(
        default=None,
        validator=_validate_template,
        metadata={
            "description": "Template of the file names in a directory, from the file an item"
            " was read from: {name}, {stem}, {suffix}, {index} (of a record in that file,"
            " from 0), and {uuid} (new each time). Default: a whole file keeps {name},"
            " a record becomes {stem}-{index}{suffix}."
        },
    )
    overwrite: bool = attrs.field(
        default=False,
        metadata={
            "description": "Replace a file of the same name in the directory; otherwise"
            " the item is written as {stem}.1{suffix} (or .2, ...)."
        },
    )
    fsync: bool = attrs.field(
        default=True,
        metadata={
            "description": "Sync what is written to disk before going on, so that a crash"
            " or power cut leaves each file whole or absent; off is faster when the"
            " output can be made again."
        },
    )
    # The last number given to a taken name, so that many items of one name
    # do not try every number again; only ever a starting point.
    _renamed: dict[str, int] = attrs.field(factory=dict, init=False, repr=False, alias="_renamed")

    def _is_directory(self) -> bool:
        return self.path.endswith(("/", os.sep)) or os.path.isdir(self.path)

    def _name_for(self, item: Any) -> str:
        if self.file_name is None and isinstance(item, FileData) and item.index is None:
            return os.path.basename(item.path)
        fields = _name_fields(item)
        if self.file_name is not None:
            return self.file_name.format(**fields)
        if isinstance(item, FileData) and item.index is not None:
            return "{stem}-{index}{suffix}".format(**fields)
        return fields["name"]

    def _write_file(self, item: Any) -> None:
        name = self._name_for(item)
        _, number = _write_atomically(
            self.path,
            name,
            item.data if isinstance(item, FileData) else item,
            fsync=self.fsync,
            replace=self.overwrite,
            after=self._renamed.get(name, 0),
        )
        if number:
            self._renamed[name] = number

    def _write_batch(self, messages: list[Any]) -> None:
        if self._is_directory():
            os.makedirs(self.path, exist_ok=True)
            # One file per item: the files of the others are written and
            # stay written when one cannot be.
            _each_alone(self._write_file, messages)
        else:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            to_json = _json_encoder()
            lines = [_as_line(item, to_json) for item in messages]
            lines.append("")  # so that the last line ends too
            _append_lines(self.path, "\n".join(lines).encode("utf-8"), self.fsync)

    async def process_batch(self, messages: list[Any]) -> None:
        await trio.to_thread.run_sync(self._write_batch, messages)
        return None
