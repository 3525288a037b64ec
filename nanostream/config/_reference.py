"""The node catalogue: ``nanostream nodes`` on a terminal and the Markdown
reference (docs/reference.md), both generated from the same attrs
declarations as the schema, so none of them can drift."""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import textwrap
import typing
from typing import Any

import attrs

from .._options import NodeOptions
from ..nodes import ALIASES, BUILTIN_NODES, EMBEDDING_NODES, load_builtin
from ._loader import ENTRY_POINT_GROUP
from ._nodeclass import plain, role
from ._schema import parameters, summary

_HEADER = """\
# Node reference

Generated from the node classes by `just docs`; edit the classes, not this
file. `nanostream nodes CLASS` prints the same on the command line.
"""

_ROLES = (("source", "Sources"), ("processor", "Processors"), ("sink", "Sinks"))
_EMBEDDING = (
    "For programs that run the graph themselves (run_graph), not for YAML files: "
    "their channels are live objects."
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _sample(field: attrs.Attribute) -> str:
    """A YAML value for a required parameter, to be replaced by the reader."""
    if "example" in field.metadata:
        return field.metadata["example"]
    kinds = [k for k in (typing.get_args(field.type) or (field.type,)) if k is not type(None)]
    kind: Any = kinds[0] if kinds else field.type
    origin = typing.get_origin(kind) or kind
    if origin is typing.Literal:
        return str(typing.get_args(kind)[0])
    samples = {int: "1", float: "1.0", bool: "true", list: f"[<{field.name}>]", dict: "{}"}
    return samples.get(origin, f"<{field.name}>")


def example_yaml(name: str, cls: type) -> list[str]:
    """A node of class ``name`` as it is written in ``node_sequence``, with
    its required parameters."""
    lines = [f"- name: {_snake(name)}", f"  class: {name}"]
    if role(cls) != "source":
        lines.append("  parents: [<upstream node>]")
    if attrs.has(cls):
        attrs.resolve_types(cls)
        for field in attrs.fields(cls):
            if field.init and field.default is attrs.NOTHING:
                lines.append(f"  {field.alias or field.name}: {_sample(field)}")
    return lines


# ---------------------------------------------------------------- the terminal


def catalogue_text() -> str:
    """``nanostream nodes``: every built-in node by role, with its summary."""
    names = list(BUILTIN_NODES) + list(EMBEDDING_NODES)
    width = max(len(name) for name in [*names, *ALIASES])
    lines: list[str] = []
    for kind, heading in _ROLES:
        lines += [f"{heading}:"]
        for name in sorted(BUILTIN_NODES):
            cls = load_builtin(name)
            if role(cls) == kind:
                lines += _entry(name, plain(summary(cls)), width)
        lines.append("")
    lines.append("Embedding:")
    lines += textwrap.wrap(_EMBEDDING, 78, initial_indent="  ", subsequent_indent="  ")
    for name in sorted(EMBEDDING_NODES):
        cls = load_builtin(name)
        lines += _entry(name, f"({role(cls)}) {plain(summary(cls))}", width)
    lines += ["", "Aliases:"]
    lines += [f"  {alias:<{width}}  {target}" for alias, target in sorted(ALIASES.items())]
    installed = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    )
    if installed:
        lines += ["", f"From installed packages (entry points {ENTRY_POINT_GROUP!r}):"]
    for entry_point in installed:
        try:
            cls = entry_point.load()
            text = f"({role(cls)}) {plain(summary(cls))}"
        except Exception as error:  # a broken plugin must not hide the others
            text = f"cannot load {entry_point.value}: {type(error).__name__}: {error}"
        lines += _entry(entry_point.name, text, width)
    lines += ["", "nanostream nodes CLASS describes one, with an example."]
    return "\n".join(lines) + "\n"


def _entry(name: str, text: str, width: int) -> list[str]:
    """A name and its text, the text wrapped in a column of its own."""
    indent = " " * (width + 4)
    return textwrap.wrap(
        f"  {name:<{width}}  {text}", 100, initial_indent="", subsequent_indent=indent
    )


def _parameter_lines(cls: type) -> list[str]:
    lines = []
    for name, type_, default, description in parameters(cls):
        shown = "required" if default is None else f"default {default}"
        lines.append(f"  {name}: {type_} ({shown})")
        if description:
            lines += textwrap.wrap(
                plain(description),
                78,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
    return lines


def describe_text(written: str, cls: type) -> str:
    """``nanostream nodes CLASS``: what the class is, its parameters, the
    runtime keys and an example."""
    lines = [f"{cls.__name__} ({role(cls)}): {cls.__module__}:{cls.__qualname__}", ""]
    for paragraph in plain(inspect.cleandoc(cls.__doc__ or "")).split("\n\n"):
        if paragraph.startswith(" ") or "::" in paragraph or "\n    " in paragraph:
            lines += [paragraph, ""]  # code: as written
        elif paragraph.strip():
            lines += [*textwrap.wrap(" ".join(paragraph.split()), 78), ""]
    if not attrs.has(cls):
        lines += ["(not an attrs class: its parameters are not declared)", ""]
    elif parameters(cls):
        lines += ["Parameters:", *_parameter_lines(cls), ""]
    else:
        lines += ["No parameters.", ""]
    lines += ["Runtime keys (every node takes them):", *_parameter_lines(NodeOptions)]
    if written not in EMBEDDING_NODES:
        lines += ["", "Example:", *("  " + line for line in example_yaml(written, cls))]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Markdown


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


def _section(name: str, aliases: dict[str, list[str]]) -> list[str]:
    cls = load_builtin(name)
    lines = ["", f"### {name}", "", f"A {role(cls)}, `{cls.__module__}:{cls.__qualname__}`."]
    if name in aliases:
        also = ", ".join(f"`{alias}`" for alias in sorted(aliases[name]))
        lines.append(f"Also called {also}.")
    lines += ["", inspect.cleandoc(cls.__doc__ or ""), ""]
    lines += _table(cls)
    if name not in EMBEDDING_NODES:
        lines += ["", "```yaml", *example_yaml(name, cls), "```"]
    return lines


def reference_text() -> str:
    """The Markdown reference of the runtime keys and every built-in node."""
    aliases: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    lines = [_HEADER, "## Runtime keys", "", "Every node accepts these beside its parameters.", ""]
    lines += _table(NodeOptions)
    lines += ["", "## Built-in nodes", ""]
    for kind, heading in _ROLES:
        names = [name for name in sorted(BUILTIN_NODES) if role(load_builtin(name)) == kind]
        lines.append(f"* {heading}: " + ", ".join(f"[`{n}`](#{n.lower()})" for n in names))
    embedded = sorted(EMBEDDING_NODES)
    lines.append("* Embedding: " + ", ".join(f"[`{n}`](#{n.lower()})" for n in embedded))
    for name in sorted(BUILTIN_NODES):
        lines += _section(name, aliases)
    lines += ["", "## Nodes for embedding", "", _EMBEDDING]
    for name in embedded:
        lines += _section(name, aliases)
    return "\n".join(lines) + "\n"
