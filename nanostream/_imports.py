"""Finding a Python object by the path a configuration file names it by."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from ._graph import did_you_mean


class ImportPathError(Exception):
    """A path such as ``package.module:name`` names nothing that can be loaded."""


def import_object(path: str, what: str = "object") -> Any:
    """The object ``path`` names: ``package.module:name`` or ``package.module.name``.

    ``name`` may be dotted (``module:Class.method``). ``what`` ("class",
    "function") is the word the error messages use for the object sought.
    Raises :class:`ImportPathError` saying what is wrong: no module part, a
    module that fails to import (with its error), or a missing name (with
    the closest one the module has).
    """
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        example = "module:ClassName" if what == "class" else f"module:{what}"
        raise ImportPathError(f"invalid {what} {path!r}: expected {example!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module may fail in any way
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        message = f"cannot import {module_name!r} for {what} {path!r}: {detail}"
        raise ImportPathError(message) from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [name for name in dir(target) if not name.startswith("_")]
            raise ImportPathError(
                f"module {module_name!r} has no {what} {attribute!r}" + did_you_mean(part, public)
            )
        target = getattr(target, part)
    return target


def forget_modules(folder: str | os.PathLike[str]) -> list[str]:
    """Drop from ``sys.modules`` the user's modules loaded from files under ``folder``.

    The next import of such a module reads its file again: a pipeline
    reloaded after an edit gets the edited code, and two pipelines in
    different folders may each have a module of the same name. Installed
    packages stay, even inside ``folder`` (a virtual environment there, a
    checkout of NanoStream itself): reloading them would give their classes
    a second identity. Returns the names of the modules dropped.
    """
    root = os.path.realpath(folder)
    dropped = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name == "nanostream" or name.startswith("nanostream."):
            continue
        relative = os.path.relpath(os.path.realpath(file), root)
        parts = relative.split(os.sep)
        if parts[0] == os.pardir or any(
            part.startswith(".") or part in _INSTALLED for part in parts[:-1]
        ):
            continue
        del sys.modules[name]
        dropped.append(name)
    importlib.invalidate_caches()
    return dropped


#: Folders that hold installed packages, never the user's own modules.
_INSTALLED = {"site-packages", "dist-packages"}
