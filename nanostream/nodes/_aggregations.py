"""Aggregations: what a window computes over its items.

A window's ``aggregate`` maps output names to aggregations, each written
in one of three ways::

    aggregate:
      n: count                      # the number of items
      amounts: collect              # an operation over whole items
      total: {sum: amount}          # an operation over one field of each item
      longest: {reduce: "mymodule:longer", field: name}   # a reducer by import path

An aggregation keeps one accumulator per window. Items are added one at a
time; two accumulators merge when session windows merge, so a reducer must
be associative (as Flink's ``ReduceFunction``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NewType

import attrs

from .._graph import did_you_mean
from .._imports import ImportPathError, import_object
from .._params import describe
from .._state import key_function

#: The type of one entry of ``aggregate`` as written in a configuration
#: file: a name (``count``), or a one-entry mapping (``{sum: amount}``),
#: or ``{reduce: module:function, field: name}``.
AggregationSpec = NewType("AggregationSpec", object)

OPERATIONS = ("count", "sum", "min", "max", "mean", "first", "last", "collect", "reduce")


def _first_add(acc: tuple, value: Any, time: float) -> tuple:
    return acc if acc[0] <= time else (time, value)


def _last_add(acc: tuple, value: Any, time: float) -> tuple:
    return (time, value) if time >= acc[0] else acc


def _collect_add(acc: list, value: Any, time: float) -> list:
    acc.append((time, value))
    return acc


def _in_time_order(acc: list) -> list:
    # sorted() is stable: items of equal times stay in arrival order.
    return [value for _, value in sorted(acc, key=lambda pair: pair[0])]


def _sum(acc: Any, value: Any, time: float) -> Any:
    return acc + value


def _min(acc: Any, value: Any, time: float) -> Any:
    return value if value < acc else acc


def _max(acc: Any, value: Any, time: float) -> Any:
    return value if value > acc else acc


@attrs.frozen
class Aggregation:
    """One aggregation of a window, ready to run.

    ``start(value, time)`` makes the accumulator of a window's first item,
    ``add(acc, value, time)`` adds an item, ``merge(a, b)`` joins two
    windows' accumulators (``a`` the earlier window's), ``result(acc,
    count)`` is the output value; ``time`` is the item's time in seconds.
    ``read(item)`` gives the value an item contributes (the item itself
    when no field is named). ``count`` reads nothing: the window counts its
    items itself.
    """

    operation: str
    field: str | None = None
    function: str | None = None
    read: Callable[[Any], Any] = attrs.field(eq=False, repr=False, default=None)
    start: Callable[[Any, float], Any] = attrs.field(eq=False, repr=False, default=None)
    add: Callable[[Any, Any, float], Any] = attrs.field(eq=False, repr=False, default=None)
    merge: Callable[[Any, Any], Any] = attrs.field(eq=False, repr=False, default=None)
    result: Callable[[Any, int], Any] = attrs.field(eq=False, repr=False, default=None)


def aggregation(spec: Any) -> Aggregation:
    """The :class:`Aggregation` that ``spec`` (an entry of ``aggregate``) describes.

    Raises ``ValueError`` or ``TypeError`` saying what is wrong: an unknown
    operation (with the closest one), a field that is not a string, a
    reducer that is not a function.
    """
    if isinstance(spec, Aggregation):
        return spec
    if isinstance(spec, str):
        return _build(_operation(spec), None, None)
    if not isinstance(spec, dict):
        raise TypeError(
            f"expected an aggregation such as count or {{sum: amount}}, got {describe(spec)}"
        )
    if "reduce" in spec:
        extra = sorted(set(spec) - {"reduce", "field"})
        if extra:
            raise ValueError(
                f"a reduce takes 'reduce' (the function) and 'field', not {extra[0]!r}"
                + did_you_mean(extra[0], ["field"])
            )
        field = spec.get("field")
        if field is not None and not isinstance(field, str):
            raise TypeError(f"field: expected a field name, got {describe(field)}")
        function = spec["reduce"]
        if not isinstance(function, str):
            raise TypeError(
                f"reduce: expected a function by import path ('module:function'), "
                f"got {describe(function)}"
            )
        return _build("reduce", field, function)
    if len(spec) != 1:
        raise ValueError(
            "expected one operation and its field, such as {sum: amount}, "
            f"not {len(spec)} entries"
        )
    [(operation, field)] = spec.items()
    operation = _operation(operation)
    if operation == "count":
        raise ValueError("count counts the window's items and takes no field: write count")
    if not isinstance(field, str):
        raise TypeError(f"{operation}: expected a field name, got {describe(field)}")
    return _build(operation, field, None)


def _operation(name: Any) -> str:
    if name not in OPERATIONS:
        shown = repr(name) if isinstance(name, str) else describe(name)
        raise ValueError(
            f"unknown aggregation {shown}"
            + did_you_mean(str(name), OPERATIONS)
            + f"; the aggregations are {', '.join(OPERATIONS)}"
        )
    if name == "reduce":
        raise ValueError("a reduce names its function: write {reduce: module:function}")
    return name


def _build(operation: str, field: str | None, function: str | None) -> Aggregation:
    read: Callable[[Any], Any] = (
        _whole if field is None else key_function(field, f"read by {operation}")
    )
    parts: dict[str, Any]
    if operation == "count":
        parts = {"start": None, "add": None, "merge": None, "result": None}
    elif operation in ("sum", "min", "max", "mean"):
        add = {"sum": _sum, "mean": _sum, "min": _min, "max": _max}[operation]
        parts = {
            "start": _value,
            "add": add,
            "merge": lambda a, b, add=add: add(a, b, 0.0),
            "result": (lambda acc, count: acc / count)
            if operation == "mean"
            else (lambda acc, count: acc),
        }
    elif operation == "first":
        parts = {
            "start": _timed,
            "add": _first_add,
            "merge": lambda a, b: a if a[0] <= b[0] else b,
            "result": lambda acc, count: acc[1],
        }
    elif operation == "last":
        parts = {
            "start": _timed,
            "add": _last_add,
            "merge": lambda a, b: b if b[0] >= a[0] else a,
            "result": lambda acc, count: acc[1],
        }
    elif operation == "collect":
        parts = {
            "start": lambda value, time: [(time, value)],
            "add": _collect_add,
            "merge": lambda a, b: a + b,
            "result": lambda acc, count: _in_time_order(acc),
        }
    else:
        reducer = _reducer(function)
        parts = {
            "start": _value,
            "add": lambda acc, value, time: reducer(acc, value),
            "merge": reducer,
            "result": lambda acc, count: acc,
        }
    return Aggregation(operation, field, function, read, **parts)


def _reducer(path: str | None) -> Callable[[Any, Any], Any]:
    try:
        function = import_object(path or "", "function")
    except ImportPathError as error:
        raise ValueError(f"reduce: {error}") from None
    if not callable(function):
        raise ValueError(f"reduce: {path!r} is not a function")
    return function


def _whole(item: Any) -> Any:
    return item


def _value(value: Any, time: float) -> Any:
    return value


def _timed(value: Any, time: float) -> tuple[float, Any]:
    return (time, value)


def aggregations(specs: Any) -> dict[str, Aggregation]:
    """``aggregate`` (a mapping from output name to aggregation) built.

    Raises ``ValueError`` or ``TypeError`` naming the entry at fault.
    """
    if not isinstance(specs, dict) or not specs:
        raise ValueError(
            f"aggregate: expected a mapping of output names to aggregations, such as "
            f"{{n: count, total: {{sum: amount}}}}, got {describe(specs)}"
        )
    built = {}
    for name, spec in specs.items():
        if not isinstance(name, str):
            raise TypeError(f"aggregate: an output name is a string, not {describe(name)}")
        try:
            built[name] = aggregation(spec)
        except (TypeError, ValueError) as error:
            raise type(error)(f"aggregate {name!r}: {error}") from None
    return built


def check_spec(value: Any, _type: Any = None) -> Hashable:
    """The cattrs hook of :data:`AggregationSpec`: ``value`` itself, once it
    is known to describe an aggregation (so that ``nanostream check`` points
    at the entry at fault)."""
    aggregation(value)
    return value


#: The JSON Schema of :data:`AggregationSpec`.
SPEC_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": [operation for operation in OPERATIONS if operation != "reduce"]},
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {
                "enum": [o for o in OPERATIONS if o not in ("count", "reduce")],
            },
            "additionalProperties": {"type": "string"},
        },
        {
            "type": "object",
            "required": ["reduce"],
            "properties": {"reduce": {"type": "string"}, "field": {"type": "string"}},
            "additionalProperties": False,
        },
    ],
    "description": "An aggregation: count, sum, min, max, mean, first, last or collect of "
    "whole items; {operation: field} over a field; {reduce: 'module:function', field: name}.",
}
