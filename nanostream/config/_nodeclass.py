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


def _misspelt_hook(name: str, defined: set[str], has_main_hook: bool) -> str | None:
    """The hook ``name`` looks like a misspelling of, if it is one.

    A near miss of process_item, generate, ... counts only when the class
    has none of them (it could not run), so that a helper such as
    ``generator()`` beside a real ``process_item`` is left alone; a near
    miss of an optional hook only when it is one letter off
    (``teardwon``, ``finsh``), since ``finished`` may well be a helper.
    """
    main = [hook for hook in PROCESSOR_HOOKS + SOURCE_HOOKS if not has_main_hook]
    close = difflib.get_close_matches(name, main, n=1, cutoff=0.8)
    if close:
        return close[0]
    optional = [
        hook
        for hook in OPTIONAL_HOOKS
        if hook not in defined and abs(len(hook) - len(name)) <= 1 and hook[0] == name[0]
    ]
    close = difflib.get_close_matches(name, optional, n=1, cutoff=0.85)
    return close[0] if close else None


def hook_problems(cls: type) -> list[str]:
    """What is wrong with the methods of node class ``cls``: a method whose
    name is a misspelt hook (``proces_item``), or no hook that makes it a
    source, a processor or a sink."""
    problems: list[str] = []
    name = cls.__name__
    own = _own_names(cls)
    has_main_hook = any(hook in own for hook in PROCESSOR_HOOKS + SOURCE_HOOKS)
    for attribute, value in own.items():
        if attribute in HOOKS or attribute.startswith("_") or not callable(value):
            continue
        hook = _misspelt_hook(attribute, set(own), has_main_hook)
        if hook is not None:
            problems.append(
                f"{name} defines {attribute!r}, which is not a hook the runtime calls "
                f"(did you mean {hook!r}?)"
            )
    if not has_main_hook:  # a method or a property
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
