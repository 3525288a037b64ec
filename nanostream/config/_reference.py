"""The node reference (docs/reference.md), generated from the same attrs
declarations as the schema and ``nanostream nodes``, so it cannot drift."""

from __future__ import annotations

import inspect

from .._options import NodeOptions
from .._processor import is_source
from ..nodes import ALIASES, BUILTIN_NODES, load_builtin
from ._schema import parameters

_HEADER = """\
# Node reference

Generated from the node classes by `just docs`; edit the classes, not this
file. `nanostream nodes CLASS` prints the same on the command line.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(cls: type) -> list[str]:
    rows = parameters(cls)
    if not rows:
        return ["No parameters."]
    lines = ["| parameter | type | default | description |", "|---|---|---|---|"]
    for name, type_, default, description in rows:
        shown = "required" if default is None else f"`{default}`"
        lines.append(f"| `{name}` | `{_cell(type_)}` | {_cell(shown)} | {_cell(description)} |")
    return lines


def reference_text() -> str:
    """The Markdown reference of the runtime keys and every built-in node."""
    aliases: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    lines = [_HEADER, "## Runtime keys", "", "Every node accepts these beside its parameters.", ""]
    lines += _table(NodeOptions)
    lines += ["", "## Built-in nodes", ""]
    lines += [f"* [`{name}`](#{name.lower()})" for name in sorted(BUILTIN_NODES)]
    for name in sorted(BUILTIN_NODES):
        cls = load_builtin(name)
        kind = "source" if is_source(cls) else "processor or sink"
        lines += ["", f"### {name}", "", f"A {kind}, `{cls.__module__}:{cls.__qualname__}`."]
        if name in aliases:
            also = ", ".join(f"`{alias}`" for alias in sorted(aliases[name]))
            lines.append(f"Also called {also}.")
        lines += ["", inspect.cleandoc(cls.__doc__ or ""), ""]
        lines += _table(cls)
    return "\n".join(lines) + "\n"
