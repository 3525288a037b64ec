"""The CSV dialect parameters that FileReader's csv mode and CsvParser share,
and how text is decoded for both: one declaration, one behaviour."""

from __future__ import annotations

import codecs
import csv
from typing import Any, Literal

import attrs

#: The ``quoting`` values, as the csv module names its constants.
_QUOTING = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}

Quoting = Literal["minimal", "all", "nonnumeric", "none"]


def _one_character(_: Any, attribute: attrs.Attribute, value: str) -> None:
    if len(value) != 1:
        raise ValueError(f"{attribute.name} must be one character, not {value!r}")


def _one_character_or_none(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        _one_character(instance, attribute, value)


@attrs.define
class CsvDialect:
    """The parameters of Python's ``csv`` dialects that reading takes, for
    the nodes that read CSV (their attrs base class, so that they are
    declared once)."""

    delimiter: str = attrs.field(
        default=",",
        validator=_one_character,
        metadata={"description": "CSV: the character between fields (';' or '\\t', say)."},
    )
    quotechar: str = attrs.field(
        default='"',
        validator=_one_character,
        metadata={"description": "CSV: the character that quotes a field holding delimiters."},
    )
    escapechar: str | None = attrs.field(
        default=None,
        validator=_one_character_or_none,
        metadata={
            "description": "CSV: the character that makes the next one literal (Python's"
            " csv escapechar); none by default."
        },
    )
    doublequote: bool = attrs.field(
        default=True,
        metadata={
            "description": "CSV: a doubled quotechar inside a quoted field is one quotechar."
        },
    )
    skipinitialspace: bool = attrs.field(
        default=False,
        metadata={"description": "CSV: ignore spaces right after a delimiter."},
    )
    quoting: Quoting = attrs.field(
        default="minimal",
        validator=attrs.validators.in_(tuple(_QUOTING)),
        metadata={
            "description": "CSV: minimal or all (quotes are read where they are), nonnumeric"
            " (unquoted fields become floats), none (quotes are data)."
        },
    )


def csv_reader(node: CsvDialect, lines: Any) -> Any:
    """A strict ``csv.reader`` over ``lines`` with ``node``'s dialect."""
    return csv.reader(
        lines,
        delimiter=node.delimiter,
        quotechar=node.quotechar,
        escapechar=node.escapechar,
        doublequote=node.doublequote,
        skipinitialspace=node.skipinitialspace,
        quoting=_QUOTING[node.quoting],
        strict=True,
    )


def text_codec(encoding: str) -> str:
    """The codec that decodes ``encoding``: UTF-8 (however it is spelt) as
    ``utf-8-sig``, which drops a byte order mark at the start (as Excel and
    Notepad write) and is plain UTF-8 otherwise; any other as it is."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


#: What a byte order mark becomes once decoded.
BOM = "\ufeff"
