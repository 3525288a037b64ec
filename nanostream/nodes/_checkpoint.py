"""A source's position, kept in a file once everything read before it is handled.

A source that reads by position (a cursor of an API, the last key of a
table) reads a group of items per position. Each group's items are emitted
with acknowledgements; a position is *reached* once its group and every
group before it are acknowledged, and only a reached position is saved.
After a crash the source starts from the saved position again: items may
be read twice, never skipped (at-least-once).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
from collections.abc import Callable
from typing import Any

import trio

from .files import _write_atomically


def _encode(position: Any) -> Any:
    """``position`` as JSON can hold it; dates and times keep their type."""
    if isinstance(position, datetime.datetime):
        return {"datetime": position.isoformat()}
    if isinstance(position, datetime.date):
        return {"date": position.isoformat()}
    return {"value": position}


def _decode(saved: Any) -> Any:
    if "datetime" in saved:
        return datetime.datetime.fromisoformat(saved["datetime"])
    if "date" in saved:
        return datetime.date.fromisoformat(saved["date"])
    return saved["value"]


class Checkpoint:
    """The position a source has reached, and the file it is kept in.

    ``path`` is a JSON file, written atomically, or ``None`` to keep the
    position in memory only (it then starts afresh with each run).
    """

    def __init__(self, path: str | None, start: Any = None) -> None:
        self.path = path
        self.reached: Any = start
        self._saved: Any = start
        self._groups: collections.deque[list[Any]] = collections.deque()

    def load(self) -> Any:
        """The saved position (``start`` if there is none yet); blocks: call in a thread."""
        if self.path is None or not os.path.exists(self.path):
            return self.reached
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
            self.reached = self._saved = _decode(saved["position"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{self.path}: not a saved position ({error}); delete it to start afresh"
            ) from None
        return self.reached

    def group(self, position: Any, count: int) -> list[Callable[[], None]]:
        """Acknowledgements for the ``count`` items read before ``position``,
        which is reached once they and all earlier groups are acknowledged."""
        entry = [count, position]
        self._groups.append(entry)
        if count == 0:
            self._advance()
            return []
        return [lambda: self._ack(entry)] * count

    def _ack(self, entry: list[Any]) -> None:
        entry[0] -= 1
        if entry[0] == 0:
            self._advance()

    def _advance(self) -> None:
        while self._groups and self._groups[0][0] == 0:
            self.reached = self._groups.popleft()[1]

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, saving the reached position once a second
        meanwhile, so that a source waiting for new input keeps its file up
        to date with what is acknowledged."""
        deadline = trio.current_time() + seconds
        while (left := deadline - trio.current_time()) > 0:
            await trio.sleep(min(left, 1.0))
            await self.save()

    async def save(self) -> None:
        """Write the reached position to the file, if it moved since the last save."""
        if self.path is None or self.reached == self._saved:
            return
        reached = self.reached
        directory, name = os.path.split(os.path.abspath(self.path))
        text = json.dumps({"position": _encode(reached)}, default=str)
        await trio.to_thread.run_sync(_write_state, directory, name, text)
        self._saved = reached


def _write_state(directory: str, name: str, text: str) -> None:
    os.makedirs(directory, exist_ok=True)
    _write_atomically(directory, name, text)
