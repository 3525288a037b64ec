"""Keyed state: what a node remembers per key, between items and across restarts.

A node given a ``key`` (a field name, or a function by import path) has
its items' keys computed by the runtime, which sets :attr:`KeyedState.key`
before each ``process_item`` call. The node reads and writes its state as a
mapping from key to value::

    @attrs.define
    class RunningCount(nanostream.Processor):
        def process_item(self, item):
            key = self.state.key
            count = self.state.get(key, 0) + 1
            self.state[key] = count
            return {"user": key, "count": count}

The values live in memory, in a plain dict, so reading and writing cost
what a dict costs. What changed since the last checkpoint is remembered, and
a pipeline with a ``state_dir`` writes only that to its store at each
checkpoint (see ``_runtime/_checkpoints``). A value must be picklable.

With a ``state_ttl``, a key not written for that long reads as absent and
is dropped at the next checkpoint: the time-to-live of Flink's
``StateTtlConfig`` with its default update type (on create and write).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from typing import Any


class NoKeyError(LookupError):
    """What :attr:`KeyedState.key` raises outside ``process_item`` of a keyed node."""


class KeyedState(MutableMapping[Hashable, Any]):
    """A node's state: a mapping from key to value, kept across restarts.

    ``key`` is the key of the item being processed. Any key may be read or
    written, which a node closing windows on a timer needs; the runtime
    routes items so that a key's items reach one worker in order.
    ``clock`` (seconds, default ``time.time``: wall time, since written
    times are kept across restarts) dates writes for ``ttl`` (seconds, or
    ``None`` for no expiry).
    """

    def __init__(
        self,
        ttl: float | None = None,
        key_function: Callable[[Any], Hashable] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        #: Whether the runtime saves this state at checkpoints (the pipeline
        #: has a ``state_dir``). A node that keeps items in its state, not
        #: in memory only, need not hold their acknowledgements back then.
        self.durable = False
        self._key_function = key_function
        self._values: dict[Hashable, Any] = {}
        self._written: dict[Hashable, float] = {}
        self._changed: set[Hashable] = set()
        self._current: contextvars.ContextVar[Hashable] = contextvars.ContextVar("state key")

    # ---------------------------------------------------------------- the current key

    @property
    def key(self) -> Hashable:
        """The key of the item being processed.

        Raises :class:`NoKeyError` outside ``process_item``, or in a node
        declared without a ``key``.
        """
        try:
            return self._current.get()
        except LookupError:
            raise NoKeyError(
                "state.key is only set in process_item of a node with a key (the runtime key 'key')"
            ) from None

    @property
    def key_function(self) -> Callable[[Any], Hashable] | None:
        """The function giving an item's key by the node's declared ``key``,
        or ``None`` for a node without one: what :meth:`key_of` calls, for a
        ``process_batch`` that keys many items."""
        return self._key_function

    def key_of(self, item: Any) -> Hashable:
        """The key of ``item`` by the node's declared ``key``; for
        ``process_batch``, which sees a batch of items of any keys.

        Raises :class:`NoKeyError` if the node has no ``key``, and what the
        key function raises (``KeyError`` for a missing field).
        """
        if self._key_function is None:
            raise NoKeyError("this node has no key (the runtime key 'key')")
        return self._key_function(item)

    def enter(self, item: Any) -> contextvars.Token:
        """Make ``item``'s key the current one; the runtime calls this
        before ``process_item``. Returns the token :meth:`leave` takes."""
        return self._current.set(self.key_of(item))

    def leave(self, token: contextvars.Token) -> None:
        self._current.reset(token)

    # ---------------------------------------------------------------- the mapping

    def __getitem__(self, key: Hashable) -> Any:
        value = self._values[key]
        if self.ttl is not None and self.clock() - self._written[key] > self.ttl:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._values[key] = value
        self._written[key] = self.clock()
        self._changed.add(key)

    def __delitem__(self, key: Hashable) -> None:
        del self._values[key]
        del self._written[key]
        self._changed.add(key)

    def __iter__(self) -> Iterator[Hashable]:
        if self.ttl is None:
            return iter(list(self._values))
        now = self.clock()
        return iter([key for key, at in self._written.items() if now - at <= self.ttl])

    def __len__(self) -> int:
        if self.ttl is None:
            return len(self._values)
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<KeyedState of {len(self._values)} keys>"

    def __getstate__(self) -> dict[str, Any]:
        # The current key is the running task's, not part of the state.
        return {name: value for name, value in vars(self).items() if name != "_current"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._current = contextvars.ContextVar("state key")

    # ---------------------------------------------------------------- checkpoints

    def expire(self) -> int:
        """Drop every key whose time-to-live has passed; return how many."""
        if self.ttl is None:
            return 0
        deadline = self.clock() - self.ttl
        expired = [key for key, at in self._written.items() if at < deadline]
        for key in expired:
            del self[key]
        return len(expired)

    def changes(self) -> tuple[dict[Hashable, tuple[Any, float]], list[Hashable]]:
        """What changed since :meth:`mark_saved`: ``{key: (value, written)}``
        for keys written, and the keys deleted."""
        written = {}
        deleted = []
        for key in self._changed:
            if key in self._values:
                written[key] = (self._values[key], self._written[key])
            else:
                deleted.append(key)
        return written, deleted

    def mark_saved(self) -> None:
        """Everything so far is in the store."""
        self._changed.clear()

    def load(self, entries: Iterator[tuple[Hashable, Any, float]]) -> None:
        """Replace the whole state by ``(key, value, written)`` entries from a store."""
        self._values.clear()
        self._written.clear()
        self._changed.clear()
        for key, value, written in entries:
            self._values[key] = value
            self._written[key] = written


def key_function(key: str, what: str = "the node's key") -> Callable[[Any], Hashable]:
    """The function a node's ``key`` names: ``module:function`` (an import
    path) is called on the item; anything else is a field name, read as
    ``item[key]`` from a mapping and ``item.key`` from any other object.
    ``what`` names the setting in the error for a missing field.

    Raises :class:`~nanostream._imports.ImportPathError` for an import
    path that names nothing.
    """
    if ":" in key:
        from ._imports import import_object  # _imports needs _graph, which needs this module

        function = import_object(key, "function")
        if not callable(function):
            raise TypeError(f"key {key!r} is not a function")
        return function
    return _field_reader(key, what)


def _field_reader(field: str, what: str) -> Callable[[Any], Hashable]:
    def read(item: Any) -> Hashable:
        if isinstance(item, dict):
            try:
                return item[field]
            except KeyError:
                raise KeyError(f"the item has no field {field!r} ({what})") from None
        try:
            return getattr(item, field)
        except AttributeError:
            raise KeyError(f"the item has no field {field!r} ({what})") from None

    read.__name__ = f"field {field!r}"
    return read
