"""The error a failing node raises: which node, doing what, on which item."""

from __future__ import annotations

import contextvars
import reprlib
from typing import Any

_NO_ITEM = object()

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxlist = 5


#: Whether error messages show the failed item: a pipeline's ``log_items``,
#: set for each node's task by its lifecycle.
log_items: contextvars.ContextVar[bool] = contextvars.ContextVar("log_items", default=True)


def short_repr(item: Any) -> str:
    """A repr of ``item`` short enough for an error message."""
    return _short.repr(item)


class NodeError(Exception):
    """A node failed. Names the node, what it was doing, and the item.

    The original exception is the ``__cause__``.
    """

    def __init__(self, node: str, during: str, error: BaseException, item: Any = _NO_ITEM):
        self.node = node
        self.during = during
        self.error = error
        self.item = None if item is _NO_ITEM else item
        message = f"node {node!r} failed in {during}: {type(error).__name__}: {error}"
        if item is not _NO_ITEM and not log_items.get():  # the error may quote the item
            message = f"node {node!r} failed in {during}: {type(error).__name__} (its message "
            message += "and the item are not shown: log_items is off)"
        elif item is not _NO_ITEM:
            message += f" (item: {short_repr(item)})"
        super().__init__(message)


def node_error(node: str, during: str, error: BaseException, item: Any = _NO_ITEM) -> NodeError:
    """A :class:`NodeError` with ``error`` as its cause, to raise or hand on."""
    failure = NodeError(node, during, error, item)
    failure.__cause__ = error
    return failure


class WorkerProcessDied(Exception):
    """A worker process ended while it handled a piece (a crash, ``os._exit``,
    a signal such as the OOM killer's SIGKILL)."""
