"""Checks shared by the parameters of node classes.

A string is iterable, so a parameter that wants a list of names would take
``"*.csv"`` as the five patterns ``*``, ``.``, ``c``, ``s``, ``v``. The YAML
loader's converter refuses a string wherever a collection is declared;
:func:`collection` does the same for nodes built in Python.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from typing import Any

import attrs


def describe(value: Any) -> str:
    """What ``value`` is, for an error message: ``a string 'abc'``, ``a list``."""
    if value is None:
        return "nothing (null)"
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    for kind, word in kinds.items():
        if isinstance(value, kind):
            return f"{word} {value!r}" if kind in (bool, int, float, str) else word
    return type(value).__name__


def collection(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: ``value`` is a collection of items (a list, tuple,
    set...), or ``None`` for an optional one; never a string, bytes or a mapping.

    Raises ``TypeError`` naming the parameter.
    """
    if value is None and attribute.default is None:
        return
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"{attribute.name} must be a list, not {describe(value)}")


def known_encoding(_: Any, attribute: attrs.Attribute, value: str) -> None:
    """attrs validator: ``value`` names a text encoding Python's ``codecs`` knows.

    Raises ``ValueError`` naming the parameter.
    """
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"{attribute.name} {value!r} is not an encoding Python knows") from None


def positive(_: Any, attribute: attrs.Attribute, value: float | None) -> None:
    """attrs validator: ``value`` is more than 0 (``None`` passes: an
    optional parameter left out).

    Raises ``ValueError`` naming the parameter.
    """
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be more than 0, not {value!r}")
