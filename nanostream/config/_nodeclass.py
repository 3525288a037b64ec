"""Mistakes in a node class that ``check`` can see before anything runs."""

from __future__ import annotations

import difflib
import inspect
import re

import attrs

from .._processor import OPTIONAL_HOOKS, PROCESSOR_HOOKS, SOURCE_HOOKS, NanoStreamProcessor

HOOKS = PROCESSOR_HOOKS + SOURCE_HOOKS + OPTIONAL_HOOKS


def _own_names(cls: type) -> dict[str, object]:
    """The names the class and its bases define below NanoStreamProcessor."""
    names: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, NanoStreamProcessor) or issubclass(NanoStreamProcessor, klass):
            continue
        names.update(vars(klass))
    return names


def declared_but_not_attrs(cls: type) -> list[str]:
    """Fields annotated on a class that is not an attrs class, which
    therefore are not parameters (``@attrs.define`` was forgotten)."""
    if attrs.has(cls):
        return []
    found: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in inspect.get_annotations(klass):
            if not name.startswith("_") and name not in found:
                found.append(name)
    return found


def hook_problems(cls: type) -> list[str]:
    """What is wrong with the methods of node class ``cls``: a method whose
    name is a misspelt hook (``proces_item``), or no hook that makes it a
    source, a processor or a sink."""
    problems: list[str] = []
    name = cls.__name__
    own = _own_names(cls)
    for attribute, value in own.items():
        if attribute in HOOKS or attribute.startswith("_") or not callable(value):
            continue
        close = difflib.get_close_matches(attribute, HOOKS, n=1, cutoff=0.8)
        if close:
            problems.append(
                f"{name} defines {attribute!r}, which is not a hook the runtime calls "
                f"(did you mean {close[0]!r}?)"
            )
    if not any(hook in own for hook in PROCESSOR_HOOKS + SOURCE_HOOKS):  # a method or property
        problems.append(
            f"{name} has no process_item or process_batch (for a processor or sink) "
            "and no generate or generate_batches (for a source): define one"
        )
    return problems


def role(cls: type) -> str:
    """``source``, ``sink`` or ``processor``: a source generates items; a
    sink is a processor whose hooks are all declared to return ``None``
    (``-> None``), so it sends nothing on."""
    if any(hook in _own_names(cls) for hook in SOURCE_HOOKS):
        return "source"
    hooks = [inspect.getattr_static(cls, hook, None) for hook in PROCESSOR_HOOKS]
    hooks = [hook for hook in hooks if hook is not None]
    if hooks and all(
        callable(hook) and inspect.signature(hook).return_annotation in (None, "None")
        for hook in hooks
    ):
        return "sink"
    return "processor"


def plain(text: str) -> str:
    """A docstring's reStructuredText markup as plain text for a terminal:
    ``code`` and :role:`target` lose their marks."""
    text = re.sub(r":[\w:]+:`~?([^`]*)`", r"\1", text)
    return re.sub(r"``([^`]*)``", r"\1", text)
