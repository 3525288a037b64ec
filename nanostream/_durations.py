"""Durations: how long a window lasts, how late an item may be, how long state lives.

A duration is a number of seconds, or a string of whole or decimal numbers
each followed by a unit, largest first: ``"250ms"``, ``"5s"``, ``"1m30s"``,
``"2h"``, ``"1d"``. The units are those of Go's ``time.ParseDuration`` and
of Flink's configuration (``ms``, ``s``, ``m``, ``h``, ``d``).
"""

from __future__ import annotations

import re
from typing import Any, NewType

from ._params import describe

#: The type of a duration parameter: seconds, as a float. Declare a field
#: ``size: Duration = attrs.field(converter=duration)``; YAML then takes
#: ``5m`` as well as ``300``, and the JSON Schema says so.
Duration = NewType("Duration", float)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
#: The JSON Schema pattern of a duration string.
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"


def duration(value: Any) -> Duration:
    """``value`` in seconds: a non-negative number as is, or a string such as
    ``"1m30s"`` added up unit by unit.

    Raises ``TypeError`` for anything else (a boolean, a list) and
    ``ValueError`` for a negative number or a string that is not a duration.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a duration such as 30s, 5m or 2h, got {describe(value)}")
    if isinstance(value, str):
        text = value.strip()
        parts = _PART.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(
                f"{value!r} is not a duration: write a number of seconds, or numbers with "
                "units ms, s, m, h, d, largest first, such as 1m30s"
            )
        units = [unit for _, unit in parts]
        if len(set(units)) != len(units) or units != sorted(units, key=_UNITS.__getitem__)[::-1]:
            raise ValueError(f"{value!r} is not a duration: give each unit once, largest first")
        return Duration(sum(float(number) * _UNITS[unit] for number, unit in parts))
    if value < 0:
        raise ValueError(f"a duration is 0 or more seconds, not {value!r}")
    return Duration(float(value))


def optional_duration(value: Any) -> Duration | None:
    """:func:`duration`, letting ``None`` (no duration) through."""
    return None if value is None else duration(value)
