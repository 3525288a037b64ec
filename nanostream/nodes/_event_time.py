"""Event time: when an item happened, read from the item itself.

Nodes that work in event time (a join within a time bound) are given
where to find it: a field of the item, or a function by import path
(``module:function``). Either gives seconds since the Unix epoch.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Any

import attrs

from .._imports import ImportPathError, import_object


def event_time_reader(where: str) -> Callable[[Any], float]:
    """The function that reads an item's event time, in seconds since the
    epoch, as ``where`` says: ``module:function`` is called on the item;
    anything else is a field, read as ``item[where]`` from a mapping and
    ``item.where`` from any other object.

    The value may be a number (seconds since the epoch), a
    :class:`datetime.datetime` (naive means UTC) or an ISO 8601 string
    (``2024-05-01T12:00:00Z``, read by :meth:`datetime.datetime.fromisoformat`).
    The reader raises ``KeyError`` for a missing field and ``ValueError``
    for a value that is not a time, each naming the field.

    Raises :class:`~nanostream._imports.ImportPathError` for an import
    path that names nothing.
    """
    if ":" in where:
        function = import_object(where, "function")
        if not callable(function):
            raise TypeError(f"{where!r} is not a function")

        def call(item: Any) -> float:
            return seconds(function(item), where)

        return call

    def read(item: Any) -> float:
        try:
            value = item[where] if isinstance(item, dict) else getattr(item, where)
        except (KeyError, AttributeError):
            raise KeyError(f"the item has no field {where!r} (its event time)") from None
        return seconds(value, where)

    return read


def seconds(value: Any, where: str) -> float:
    """``value``, an event time read from ``where``, in seconds since the epoch."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"event time {value!r} from {where!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"event time {value!r} from {where!r} is not an ISO 8601 time "
                "(such as 2024-05-01T12:00:00Z) or a number of seconds"
            ) from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    raise ValueError(
        f"event time from {where!r} is {type(value).__name__} {value!r}, not a number of "
        "seconds, a datetime or an ISO 8601 string"
    )


def event_time_field(description: str) -> Any:
    """An attrs field naming where an item's event time is, checked when
    the node is built (so ``nanostream check`` reports an import path
    that names nothing at its line and column)."""
    return attrs.field(validator=_importable, metadata={"description": description})


def _importable(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{attribute.name} must be a field name or 'module:function'")
    try:
        event_time_reader(value)
    except (ImportPathError, TypeError) as error:
        raise ValueError(str(error), attribute) from None
