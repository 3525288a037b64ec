"""JSON for values that the standard library's encoder refuses but that rows
and records commonly hold: dates and times (from SQL), decimals, UUIDs."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any


def _default(value: Any) -> Any:
    """What ``json.dumps`` writes for ``value`` it cannot encode itself."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """``value`` as JSON text, UTF-8 characters as they are; dates and times
    in ISO 8601, decimals as numbers, UUIDs as strings. TypeError for
    anything else JSON cannot hold."""
    return json.dumps(value, ensure_ascii=False, default=_default)
