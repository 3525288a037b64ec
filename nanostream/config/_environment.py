"""``${VAR}`` references to environment variables in a pipeline file.

References are found in the text before it is parsed, and each is replaced
by a placeholder of the same length, so that YAML sees a plain word (a
reference may sit in flow style, ``{max_loops: ${N}}``) and every line and
column stays where it was. The placeholders are replaced by the values once
the tree is parsed.

Syntax, as in POSIX shells and Docker Compose: ``${NAME}``, ``${NAME:-default}``
(the default used when ``NAME`` is unset or empty; it may hold references
itself), and ``$${`` for a literal ``${``.

A value from the environment is never echoed in an error message: the
:class:`Secrets` of a file turn it back into the variable's name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import attrs

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Placeholders are made of characters from Unicode's private use area,
#: which YAML takes as plain text: a start mark, padding, then the
#: reference's number in base 256, with digits of their own. The shortest
#: reference, ``${A}``, leaves room for three digits: 16 million references.
_START, _PAD, _DIGIT0, _BASE = "\ue000", "\ue001", 0xE010, 256
PLACEHOLDER = re.compile(f"{_START}{_PAD}*[{chr(_DIGIT0)}-{chr(_DIGIT0 + _BASE - 1)}]+")


class MalformedReference(ValueError):
    """A malformed ``${...}``."""


@attrs.frozen
class Reference:
    """One ``${NAME}``, ``${NAME:-default}`` or ``$${`` in the text."""

    text: str
    name: str | None  # None for ``$${``, a literal ``${`` (or for plain text)
    default: str | None = None


def _placeholder(index: int, length: int) -> str:
    digits = chr(_DIGIT0 + index % _BASE)
    while index := index // _BASE:
        digits = chr(_DIGIT0 + index % _BASE) + digits
    return _START + _PAD * (length - 1 - len(digits)) + digits


def _index(placeholder: str) -> int:
    index = 0
    for digit in placeholder.lstrip(_START + _PAD):
        index = index * _BASE + ord(digit) - _DIGIT0
    return index


def _end_of(text: str, start: int) -> int:
    """The index just past the ``}`` closing the ``${`` at ``start``."""
    depth, index = 0, start
    while index < len(text):
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        char = text[index]
        if char == "\n":
            break
        if char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise MalformedReference("'${' without its closing '}' (write $${ for a literal ${)")


def parse_reference(text: str, start: int = 0) -> tuple[Reference, int]:
    """The reference at ``start`` of ``text`` (which begins ``${`` or
    ``$${``) and the index just past it."""
    if text.startswith("$${", start):
        return Reference("$${", None), start + 3
    end = _end_of(text, start)
    body = text[start + 2 : end - 1]
    match = _NAME.match(body)
    if match is None:
        raise MalformedReference(
            f"'{text[start:end]}' is not a variable reference: write ${{NAME}} "
            "or ${NAME:-default}, or $${ for a literal ${",
        )
    rest = body[match.end() :]
    if rest and not rest.startswith(":-"):
        raise MalformedReference(
            f"'{text[start:end]}' is not a variable reference: only ${{NAME:-default}} "
            "is understood after the name",
        )
    return Reference(text[start:end], match.group(), rest[2:] if rest else None), end


def mask(text: str) -> tuple[str, list[Reference]]:
    """``text`` with each reference replaced by a placeholder of its length,
    and the references in order. A malformed one is left as it is, for
    :func:`malformed` to explain once it is found in a value (not in a
    comment)."""
    pieces: list[str] = []
    references: list[Reference] = []
    index = search = 0  # copied up to index; looking from search
    while (found := text.find("${", search)) >= 0:
        start = found - 1 if found > search and text[found - 1] == "$" else found
        try:
            reference, end = parse_reference(text, start)
        except MalformedReference:
            search = found + 2
            continue
        pieces.append(text[index:start])
        pieces.append(_placeholder(len(references), end - start))
        references.append(reference)
        index = search = end
    pieces.append(text[index:])
    return "".join(pieces), references


def malformed(text: str) -> str:
    """Why the ``${`` left in ``text`` (after masking) is not a reference."""
    try:
        parse_reference(text, text.index("${"))
    except MalformedReference as error:
        return str(error)
    return "'${' starts a variable reference: write $${ for a literal ${"


@attrs.define
class Substitution:
    """What became of one string: its value, and the variables it took."""

    value: str
    template: str  # the text as written, references and all
    names: list[str]  # the variables whose values it holds
    missing: list[str]  # the variables that were unset, with no default


def substitute(text: str, references: list[Reference], environ: Mapping[str, str]) -> Substitution:
    """``text`` (with placeholders) with each reference's value."""
    names: list[str] = []
    missing: list[str] = []
    template: list[str] = []

    def value_of(reference: Reference) -> str:
        if reference.name is None:  # "$${", or text that only looks like a placeholder
            return "${" if reference.text == "$${" else reference.text
        value = environ.get(reference.name)
        if value:
            names.append(reference.name)
            return value
        if reference.default is not None:
            return expand(reference.default)
        if value is None:
            missing.append(reference.name)
        return ""

    def expand(default: str) -> str:
        out, index = [], 0
        while (found := default.find("${", index)) >= 0:
            start = found - 1 if found > 0 and default[found - 1] == "$" else found
            out.append(default[index:start])
            reference, index = parse_reference(default, start)
            out.append(value_of(reference))
        out.append(default[index:])
        return "".join(out)

    def replace(match: re.Match[str]) -> str:
        reference = _reference(match, references)
        template.append(reference.text)
        return value_of(reference)

    value = PLACEHOLDER.sub(replace, text)
    it = iter(template)
    written = PLACEHOLDER.sub(lambda _: next(it), text)
    return Substitution(value, written, names, missing)


def unmask(text: str, references: list[Reference]) -> str:
    """``text`` with its placeholders turned back into the references as written."""
    return PLACEHOLDER.sub(lambda match: _reference(match, references).text, text)


def _reference(match: re.Match[str], references: list[Reference]) -> Reference:
    """The reference a placeholder stands for; text that only looks like a
    placeholder (private-use characters in the file itself) stands for itself."""
    index = _index(match.group())
    if index < len(references) and len(references[index].text) == len(match.group()):
        return references[index]
    return Reference(match.group(), None)


#: The password of a URL's user information, ``scheme://user:password@host``
#: (RFC 3986, section 3.2.1).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)([^@/\s'\"]+)(@)")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by as many
    ``*``, so that columns stay where they were."""

    def hide(match: re.Match[str]) -> str:
        user, password, at = match.groups()
        if password.startswith("${") and password.endswith("}"):
            return match.group()  # a variable's name, not its value
        return user + "*" * len(password) + at

    return _URL_PASSWORD.sub(hide, text)


@attrs.define
class Secrets:
    """The values a file took from the environment, so that error messages
    name the variable instead of showing the value."""

    values: dict[str, str] = attrs.field(factory=dict)  # value -> "${NAME}"

    def add(self, value: str, name: str) -> None:
        if value:
            self.values.setdefault(value, f"${{{name}}}")

    def hide(self, message: str, *, everywhere: bool = True) -> str:
        """``message`` with every value from the environment replaced by its
        variable's name, and the passwords of URLs hidden. Short values (under
        4 characters) are only hidden when ``everywhere`` is true, where the
        message is about that value."""
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) < 4 and not everywhere:
                continue
            name = self.values[value]
            message = message.replace(repr(value), f"{name} (value not shown)")
            message = re.sub(rf"(?<![\w]){re.escape(value)}(?![\w])", lambda _, n=name: n, message)
        return hide_passwords(message)

    def filter(self, record: logging.LogRecord) -> bool:
        """As a logging filter (``handler.addFilter(secrets)``): the record's
        message and traceback with the values hidden. Always lets it pass."""
        if not self.values:
            return True
        message = record.getMessage()
        hidden = self.hide(message, everywhere=False)
        if hidden != message:
            record.msg, record.args = hidden, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.hide(record.exc_text, everywhere=False)
        return True
