"""Keyed nodes: setting ``state.key`` to each item's key around ``process_item``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._processor import NanoStreamProcessor, call_style, parent_parameters
from .._state import KeyedState, key_function


def attach_state(processor: NanoStreamProcessor, state: KeyedState) -> None:
    """Make ``state`` the one ``processor.state`` returns."""
    processor.__dict__["_nanostream_state"] = state


def state_of(
    processor: NanoStreamProcessor, key: str | None, ttl: float | None, attach: bool = True
) -> KeyedState:
    """The state a node runs with: a new one, keyed by its ``key`` (read
    from the item inside the :class:`FromParent` for a node that names its
    parents); made the node's own unless ``attach`` is false (a node run in
    worker processes, which keeps no state in the pipeline's process)."""
    function = None if key is None else key_function(key)
    if function is not None and parent_parameters(processor):
        function = _inside(function)
    state = KeyedState(ttl, function)
    if attach:
        attach_state(processor, state)
    return state


def _inside(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``read`` applied to the item a :class:`FromParent` wraps."""

    def read_inside(tagged: Any) -> Any:
        return read(tagged.item)

    return read_inside


class KeyedProcessor:
    """A keyed node as the runtime calls it: the node itself, except that
    its ``process_item`` (and ``process_item_batches``) first makes the
    item's key ``state.key``.

    Every other attribute is the node's own. A node with ``process_batch``
    sees many keys at once and asks ``state.key_of(item)`` itself.
    """

    def __init__(self, processor: NanoStreamProcessor, state: KeyedState) -> None:
        self._processor = processor
        if not callable(getattr(processor, "process_batch", None)):
            self.process_item = _with_key(processor.process_item, state)
            in_lists = getattr(processor, "process_item_batches", None)
            if callable(in_lists):
                self.process_item_batches = _with_key(in_lists, state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


def _with_key(process_item: Callable[[Any], Any], state: KeyedState) -> Callable[[Any], Any]:
    """``process_item`` in the same call style, run with the item's key set."""
    enter, leave = state.enter, state.leave
    style = call_style(process_item)
    if style == "generator":

        def keyed_generator(item: Any) -> Any:
            token = enter(item)
            try:
                yield from process_item(item)
            finally:
                leave(token)

        return keyed_generator
    if style == "async":

        async def keyed_async(item: Any) -> Any:
            token = enter(item)
            try:
                return await process_item(item)
            finally:
                leave(token)

        return keyed_async
    if style == "async generator":

        async def keyed_async_generator(item: Any) -> Any:
            token = enter(item)
            try:
                async for result in process_item(item):
                    yield result
            finally:
                leave(token)

        return keyed_async_generator

    def keyed(item: Any) -> Any:
        token = enter(item)
        try:
            return process_item(item)
        finally:
            leave(token)

    return keyed
