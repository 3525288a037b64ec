"""Event time: an item's time, as the Window and Join nodes read it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from .._params import describe


def seconds(value: Any) -> float:
    """An item's time in seconds since the epoch: a number as is, a
    ``datetime`` or an ISO-8601 string (Python's ``datetime.fromisoformat``)
    converted, naive ones taken as UTC.

    Raises ``TypeError`` for anything else and ``ValueError`` for a string
    that is not ISO 8601 or a time that is not finite.
    """
    kind = type(value)
    if kind is not float and kind is not int:
        if kind is str:
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"time {value!r} is neither seconds since the epoch nor an ISO-8601 "
                    "date and time"
                ) from None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.timestamp()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                "time: expected seconds since the epoch, a datetime or an ISO-8601 string, "
                f"got {describe(value)}"
            )
    if not -math.inf < value < math.inf:
        raise ValueError(f"time {value!r} is not a finite number of seconds")
    return float(value)
