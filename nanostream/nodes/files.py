"""Nodes that read files and write files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import attrs
import trio

from .._processor import NanoStreamProcessor

#: How many records a streaming read hands over per trip from its thread.
_CHUNK = 1000


@attrs.frozen
class FileData:
    """Something read from a file, with the path of that file, so that a
    writer downstream can keep the original name. ``str()`` is the data."""

    path: str
    data: Any

    def __str__(self) -> str:
        if isinstance(self.data, bytes):
            return self.data.decode("utf-8", errors="replace")
        return str(self.data)


def _records(path: str, mode: str, encoding: str) -> Iterator[Any]:
    if mode == "text":
        with open(path, encoding=encoding) as f:
            yield f.read()
    elif mode == "bytes":
        with open(path, "rb") as f:
            yield f.read()
    elif mode == "lines":
        with open(path, encoding=encoding) as f:
            for line in f:
                yield line.rstrip("\r\n")
    elif mode == "jsonl":
        with open(path, encoding=encoding) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    elif mode == "csv":
        with open(path, encoding=encoding, newline="") as f:
            yield from csv.DictReader(f)
    else:  # pragma: no cover - attrs validator
        raise ValueError(f"unknown mode {mode!r}")


@attrs.define
class FileReader(NanoStreamProcessor):
    """Reads the file each item names (or the fixed ``path``) and emits its
    content as ``FileData(path, data)``: the whole text or bytes, or one record
    per line (``lines``, ``jsonl``) or row (``csv``, as a dict), streamed
    without holding the file in memory."""

    mode: Literal["text", "bytes", "lines", "jsonl", "csv"] = attrs.field(
        default="text",
        validator=attrs.validators.in_(("text", "bytes", "lines", "jsonl", "csv")),
        metadata={
            "description": "text or bytes: one item per file; lines, jsonl, csv:"
            " one item per line or row."
        },
    )
    encoding: str = attrs.field(
        default="utf-8", metadata={"description": "Encoding of text files."}
    )
    path: str | None = attrs.field(
        default=None,
        metadata={"description": "Read this file for every item instead of the path it names."},
    )

    def _read_all(self, paths: list[str]) -> list[Any]:
        return [next(_records(path, self.mode, self.encoding)) for path in paths]

    async def process_batch(self, messages: list[Any]) -> AsyncIterator[FileData]:
        paths = [self.path if self.path is not None else str(message) for message in messages]
        if self.mode in ("text", "bytes"):
            # One thread call for the whole batch.
            contents = await trio.to_thread.run_sync(self._read_all, paths)
            for path, data in zip(paths, contents, strict=True):
                yield FileData(path, data)
            return
        for path in paths:
            records = _records(path, self.mode, self.encoding)
            try:
                while True:
                    chunk = await trio.to_thread.run_sync(_take, records, _CHUNK)
                    for record in chunk:
                        yield FileData(path, record)
                    if len(chunk) < _CHUNK:
                        break
            finally:
                records.close()


def _take(records: Iterator[Any], count: int) -> list[Any]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= count:
            break
    return chunk


def _as_line(item: Any) -> str:
    data = item.data if isinstance(item, FileData) else item
    if isinstance(data, (dict, list)):
        return json.dumps(data, ensure_ascii=False)
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import: os.umask is process-wide, so not from worker threads.
_UMASK = _read_umask()


def _write_atomically(directory: str, name: str, data: Any) -> None:
    if isinstance(data, (dict, list)):
        data = json.dumps(data, ensure_ascii=False) + "\n"
    payload = data if isinstance(data, bytes) else str(data).encode("utf-8")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@attrs.define
class FileWriter(NanoStreamProcessor):
    """Writes items to files. If ``path`` is a directory (existing, or ending
    in '/'), each item becomes a file there, written atomically and named after
    the file it was read from (or a new unique name). Otherwise each item is
    appended to ``path`` as one line (JSON for dicts and lists)."""

    path: str = attrs.field(metadata={"description": "A directory, or a file to append lines to."})

    def _is_directory(self) -> bool:
        return self.path.endswith(("/", os.sep)) or os.path.isdir(self.path)

    def _write_batch(self, messages: list[Any]) -> None:
        if self._is_directory():
            os.makedirs(self.path, exist_ok=True)
            for item in messages:
                if isinstance(item, FileData):
                    name, data = os.path.basename(item.path), item.data
                else:
                    name, data = f"{uuid.uuid4().hex}.txt", item
                _write_atomically(self.path, name, data)
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(_as_line(item) + "\n" for item in messages))
                f.flush()

    async def process_batch(self, messages: list[Any]) -> None:
        await trio.to_thread.run_sync(self._write_batch, messages)
        return None
