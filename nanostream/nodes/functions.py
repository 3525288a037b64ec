"""Nodes that run a function named in the configuration on each item: Filter and Map."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

from .._imports import ImportPathError, import_object
from .._processor import NanoStreamProcessor, call_style

_FUNCTION_HELP = (
    "The function, by import path: 'package.module:function' or 'package.module.function'."
    " Modules beside the pipeline file are importable."
)


def _resolve(path: str) -> Callable[..., Any]:
    """The callable ``path`` names; a ValueError saying why if there is none."""
    try:
        function = import_object(path, "function")
    except ImportPathError as error:
        raise ValueError(str(error)) from error
    if not callable(function):
        raise ValueError(f"function {path!r} is not callable: it is {type(function).__name__}")
    return function


def _bind(node: _FunctionNode) -> Callable[..., Any]:
    """The node's function with its ``kwargs`` applied; resolved once, when the
    node is built, so that a wrong path is a configuration error."""
    function = _resolve(node.function)
    if not node.kwargs:
        return function
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some built-ins do not say what they take
        signature = None
    if signature is not None:
        try:
            signature.bind(object(), **node.kwargs)
        except TypeError as error:
            raise ValueError(
                f"kwargs {node.kwargs!r} do not fit function {node.function!r}: {error}"
            ) from None
    return partial(function, **node.kwargs)


@attrs.define
class _FunctionNode(NanoStreamProcessor):
    """The parameters Filter and Map share."""

    function: str = attrs.field(
        validator=attrs.validators.instance_of(str), metadata={"description": _FUNCTION_HELP}
    )
    kwargs: dict[str, Any] = attrs.field(
        factory=dict,
        metadata={"description": "Keyword arguments passed to the function with each item."},
    )
    _call: Callable[..., Any] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._call = _bind(self)


@attrs.define
class Filter(_FunctionNode):
    """Sends on the items for which ``function(item)`` is true (or false, with
    ``invert``), unchanged. The function may be ``async def``."""

    invert: bool = attrs.field(
        default=False, metadata={"description": "Keep the items for which the function is false."}
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if call_style(self._call) in ("generator", "async generator"):
            raise ValueError(
                f"function {self.function!r} is a generator function; Filter needs a"
                " function that returns true or false"
            )

    @property
    def process_item(self) -> Callable[[Any], Any]:
        # A property so that the runtime sees an async method when the
        # function is async, and a plain one, with no test of ``invert`` per
        # item, otherwise.
        if call_style(self._call) == "async":
            return self._keep_async
        return self._drop if self.invert else self._keep

    @property
    def _fused_test(self) -> tuple[Callable[[Any], Any], bool] | None:
        # For a fused chain (the runtime's _chaining): the function and
        # invert, so that the chain's loop tests items itself, with no call
        # of _keep or _drop between. None when the function is async.
        if call_style(self._call) == "async":
            return None
        return self._call, self.invert

    def _keep(self, message: Any) -> Any:
        return message if self._call(message) else None

    def _drop(self, message: Any) -> Any:
        return None if self._call(message) else message

    async def _keep_async(self, message: Any) -> Any:
        return message if bool(await self._call(message)) is not self.invert else None


@attrs.define
class Map(_FunctionNode):
    """Replaces each item with ``function(item)``. A result of ``None`` sends
    nothing; a generator function sends each item it yields; ``async def``
    functions are awaited."""

    @property
    def process_item(self) -> Callable[[Any], Any]:
        # The function itself is the node's process_item: the runtime calls it
        # directly, with no wrapper around each item.
        return self._call
