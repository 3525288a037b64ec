"""The JSON Schema of pipeline files and the node catalogue, both generated
from the attrs declarations of the node classes."""

from __future__ import annotations

import contextlib
import json
import re
import types
import typing
from typing import Any

import attrs

from .._durations import DURATION_PATTERN, Duration
from .._options import NodeOptions
from ..nodes import ALIASES, BUILTIN_NODES, load_builtin
from ..nodes._aggregations import SPEC_SCHEMA, AggregationSpec

SCHEMA_ID = "https://nanostream.dev/schemas/nanostream.schema.json"
_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}


def type_schema(type_: Any) -> dict[str, Any]:
    """The JSON Schema of values of the Python type ``type_``."""
    if type_ in _SCALARS:
        return {"type": _SCALARS[type_]}
    if type_ is Duration:
        return {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    if type_ is AggregationSpec:
        return SPEC_SCHEMA
    origin = typing.get_origin(type_)
    args = typing.get_args(type_)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        parts = [type_schema(arg) for arg in args]
        if all(set(part) == {"type"} and isinstance(part["type"], str) for part in parts):
            return {"type": [part["type"] for part in parts]}
        return {"anyOf": parts}
    if origin in (list, tuple, set, frozenset) or type_ in (list, tuple, set, frozenset):
        schema: dict[str, Any] = {"type": "array"}
        homogeneous = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        if homogeneous and args[0] is not Any:
            schema["items"] = type_schema(args[0])
        return schema
    if origin is dict or type_ is dict:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    return {}


def _default(field: attrs.Attribute) -> tuple[bool, Any]:
    default = field.default
    if default is attrs.NOTHING:
        return False, None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return False, None
        default = default.factory()
    try:
        json.dumps(default)
    except (TypeError, ValueError):
        return False, None
    return True, default


#: A whole value written as ``${VAR}`` or ``${VAR:-default}``, resolved when loading.
#: (A default may hold references itself, which a regular expression cannot
#: match pair by pair: the loader checks those.)
ENV_REFERENCE = {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-.*)?\}$"}


def field_schema(field: attrs.Attribute) -> dict[str, Any]:
    schema = type_schema(field.type)
    kinds = schema.get("type")
    if schema and kinds != "string" and not (isinstance(kinds, list) and "string" in kinds):
        schema = {"anyOf": [schema, ENV_REFERENCE]}
    description = field.metadata.get("description")
    if description:
        schema["description"] = description
    has_default, default = _default(field)
    if has_default:
        schema["default"] = default
    return schema


def _fields(cls: type) -> list[attrs.Attribute]:
    if not attrs.has(cls):
        return []
    # An annotation that names something unimportable stays a string.
    with contextlib.suppress(Exception):
        attrs.resolve_types(cls)
    return [field for field in attrs.fields(cls) if field.init]


def parameters(cls: type) -> list[tuple[str, str, str | None, str]]:
    """(name, type, default or None when required, description) of each parameter."""
    rows = []
    for field in _fields(cls):
        has_default, default = _default(field)
        if field.default is attrs.NOTHING:
            shown = None
        elif has_default:
            shown = json.dumps(default)
        else:
            shown = "(computed)"
        rows.append(
            (field.name, type_name(field.type), shown, field.metadata.get("description", ""))
        )
    return rows


def type_name(type_: Any) -> str:
    if type_ is None:
        return "Any"
    if isinstance(type_, type) and not typing.get_args(type_):
        return type_.__name__
    # Named types by their names: Duration, not nanostream._durations.Duration.
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Z])", "", str(type_))


def summary(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _common() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "name": {"type": "string", "description": "The node's unique name."},
        "class": {
            "type": "string",
            "description": "A built-in node name, 'package.module:ClassName', or an "
            "entry point in the group 'nanostream.nodes'.",
        },
        "parents": {
            "description": "The nodes whose results this node receives.",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
    }
    for field in _fields(NodeOptions):
        properties[field.name] = field_schema(field)
    return properties


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a pipeline file, for the built-in
    nodes ``BUILTIN_NODES`` holds now; other classes are checked for the
    common keys only."""
    defs: dict[str, Any] = {}
    branches = []
    names = sorted(BUILTIN_NODES)
    for name in names:
        cls = load_builtin(name)
        properties = {
            key: ({"$ref": f"#/$defs/{key}"} if key != "class" else {"const": name})
            for key in ["name", "class", "parents"]
        }
        properties.update(
            {f.name: {"$ref": f"#/$defs/option_{f.name}"} for f in attrs.fields(NodeOptions)}
        )
        required = ["name", "class", *(["key"] if getattr(cls, "needs_key", False) else [])]
        for field in _fields(cls):
            properties[field.name] = field_schema(field)
            if field.default is attrs.NOTHING:
                required.append(field.name)
        accepted = [name, *sorted(a for a, target in ALIASES.items() if target == name)]
        defs[name] = {
            "type": "object",
            "description": summary(cls),
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        class_test = {"const": name} if len(accepted) == 1 else {"enum": accepted}
        if len(accepted) > 1:
            defs[name]["properties"]["class"] = {"enum": accepted}
        branches.append(
            {
                "if": {"properties": {"class": class_test}, "required": ["class"]},
                "then": {"$ref": f"#/$defs/{name}"},
            }
        )
    common = _common()
    for key in ["name", "class", "parents"]:
        defs[key] = common[key]
    for field in attrs.fields(NodeOptions):
        defs[f"option_{field.name}"] = common[field.name]
    builtin_names = names + sorted(ALIASES)
    defs["node"] = {
        "type": "object",
        "required": ["name", "class"],
        "properties": {
            "name": {"$ref": "#/$defs/name"},
            "class": {
                "anyOf": [{"enum": builtin_names}, {"$ref": "#/$defs/class"}],
            },
            "parents": {"$ref": "#/$defs/parents"},
            **{f.name: {"$ref": f"#/$defs/option_{f.name}"} for f in attrs.fields(NodeOptions)},
        },
        "allOf": branches,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "NanoStream pipeline",
        "description": "A NanoStream pipeline configuration file.",
        "type": "object",
        "required": ["node_sequence"],
        "additionalProperties": False,
        "properties": {
            "pipeline_name": {"type": "string", "description": "The pipeline's name."},
            "log_items": {
                "type": "boolean",
                "default": True,
                "description": "Show the item that failed, and the error's message, in "
                "error messages and logs; false for data that must not reach the logs.",
            },
            "state_dir": {
                "type": "string",
                "description": "A folder where the nodes' state and the sources' positions "
                "are saved at each checkpoint and restored on the next run; unset, state "
                "is kept in memory only.",
            },
            "checkpoint_interval": {
                **type_schema(Duration),
                "default": 10.0,
                "description": "How often a checkpoint is taken, with a state_dir "
                "(a duration such as 10s or 1m).",
            },
            "node_sequence": {
                "type": "array",
                "description": "The nodes of the pipeline, in any order.",
                "items": {"$ref": "#/$defs/node"},
            },
        },
        "$defs": defs,
    }


def schema_text() -> str:
    """The schema as the text checked in under ``schemas/``."""
    return json.dumps(pipeline_schema(), indent=2, sort_keys=False) + "\n"
