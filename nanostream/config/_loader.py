"""Loading a YAML pipeline: parse, interpolate, structure, resolve, build, check."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import format_exception
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .._graph import NanoStreamGraph, did_you_mean
from .._imports import ImportPathError, import_object
from .._options import NodeOptions
from .._processor import NanoStreamProcessor
from ..nodes import ALIASES, BUILTIN_NODES, load_builtin
from ._errors import ConfigError, ConfigErrors

ENTRY_POINT_GROUP = "nanostream.nodes"
RESERVED_KEYS = ("name", "class", "parents")
OPTION_KEYS = tuple(field.name for field in attrs.fields(NodeOptions))

_REFERENCE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@attrs.define
class NodeConfig:
    """The keys of a YAML node that are neither runtime options nor parameters."""

    name: str
    class_: str
    parents: list[str] = attrs.field(factory=list)


@attrs.define
class PipelineConfig:
    """The top level of a pipeline file."""

    node_sequence: list[dict[str, Any]]
    pipeline_name: str = "pipeline"


# ---------------------------------------------------------------- converter


def _strict(kind: type, name: str, accept: tuple[type, ...]):
    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got {_describe(value)}")
        if not isinstance(value, accept):
            raise TypeError(f"expected {name}, got {_describe(value)}")
        return kind(value)

    return structure


def _describe(value: Any) -> str:
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


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _strict(int, "an integer", (int,)))
    converter.register_structure_hook(float, _strict(float, "a number", (int, float)))
    converter.register_structure_hook(str, _strict(str, "a string", (str,)))
    converter.register_structure_hook(bool, _strict(bool, "true or false", (bool,)))

    def is_literal(type_: Any) -> bool:
        return typing.get_origin(type_) is typing.Literal

    def structure_literal(value: Any, type_: Any) -> Any:
        choices = typing.get_args(type_)
        if value not in choices or type(value) not in {type(c) for c in choices}:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"expected one of {listed}, got {_describe(value)}")
        return value

    converter.register_structure_hook_func(is_literal, structure_literal)

    def structure_parents(value: Any, _type: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise TypeError(f"expected a list of node names, got {_describe(value)}")
        return converter.structure(value, list[str])

    converter.register_structure_hook(
        NodeConfig,
        cattrs.gen.make_dict_structure_fn(
            NodeConfig,
            converter,
            class_=cattrs.gen.override(rename="class"),
            parents=cattrs.gen.override(struct_hook=structure_parents),
        ),
    )
    return converter


CONVERTER = _make_converter()


# ---------------------------------------------------------------- class resolution


def node_class_names() -> list[str]:
    """Every name ``class:`` accepts without a module path."""
    names = list(BUILTIN_NODES) + list(ALIASES)
    with contextlib.suppress(Exception):
        names += [ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return names


def resolve_class(name: str) -> type:
    """The node class ``name`` stands for: a built-in name, ``module:Class``,
    ``module.Class`` or an entry point in the group ``nanostream.nodes``."""
    if name in BUILTIN_NODES or name in ALIASES:
        return load_builtin(name)
    if ":" not in name:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name == name:
                return entry_point.load()
    if ":" not in name and "." not in name:
        raise ImportPathError(f"unknown class {name!r}" + did_you_mean(name, node_class_names()))
    return import_object(name, "class")


# ---------------------------------------------------------------- positions


class _Source:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.errors: list[ConfigError] = []
        self.unset: set[tuple[int, int]] = set()

    def error(self, position: tuple[int, int], message: str, *, unset: bool = False) -> None:
        if unset:
            self.unset.add(position)
        elif position in self.unset:
            return  # the value is wrong only because a variable is missing
        line, col = position
        source_line = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        error = ConfigError(self.path, line, col, message, source_line)
        if error not in self.errors:
            self.errors.append(error)


def _pos(pair: Any) -> tuple[int, int]:
    return (pair[0] + 1, pair[1] + 1)


def _start(container: Any) -> tuple[int, int]:
    with contextlib.suppress(Exception):
        return (container.lc.line + 1, container.lc.col + 1)
    return (1, 1)


def key_position(mapping: Any, key: Any) -> tuple[int, int]:
    with contextlib.suppress(Exception):
        return _pos(mapping.lc.key(key))
    return _start(mapping)


def value_position(container: Any, key: Any) -> tuple[int, int]:
    with contextlib.suppress(Exception):
        if isinstance(container, CommentedSeq):
            return _pos(container.lc.item(key))
        return _pos(container.lc.value(key))
    return _start(container)


def path_position(container: Any, path: list[Any], *, key: bool = False) -> tuple[int, int]:
    """Where ``path`` (keys and indexes) leads in the parsed tree."""
    position = _start(container)
    for index, step in enumerate(path):
        last = index == len(path) - 1
        if isinstance(container, CommentedMap) and step in container:
            position = (
                key_position(container, step) if (last and key) else value_position(container, step)
            )
            container = container[step]
        elif (
            isinstance(container, CommentedSeq)
            and isinstance(step, int)
            and 0 <= step < len(container)
        ):
            position = value_position(container, step)
            container = container[step]
        else:
            break
    return position


# ---------------------------------------------------------------- interpolation


def _interpolate(tree: Any, source: _Source, environ: typing.Mapping[str, str]) -> Any:
    """A plain copy of ``tree`` (dicts, lists, scalars) with ``${VAR}`` and
    ``${VAR:-default}`` substituted in strings; ``$${`` stays a literal ``${``."""

    def substitute(text: str, position: tuple[int, int]) -> Any:
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(0)[1:]
            name, default = match.group(2), match.group(3)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            missing.append(name)
            return ""

        result = _REFERENCE.sub(replace, text)
        for name in missing:
            source.error(
                position,
                f"environment variable {name!r} is not set "
                f"(write ${{{name}:-default}} to give a default)",
                unset=True,
            )
        if not missing and result != text and type(text) is str and _REFERENCE.fullmatch(text):
            # A whole plain scalar that was one reference takes the YAML type of its value.
            with contextlib.suppress(Exception):
                value = YAML(typ="safe", pure=True).load(result)
                if value is None or isinstance(value, (bool, int, float, str)):
                    return value
        return result

    def walk(node: Any, position: tuple[int, int]) -> Any:
        if isinstance(node, dict):
            plain = {}
            for k, v in node.items():
                if not isinstance(k, str):
                    source.error(key_position(node, k), f"keys are names, not {_describe(k)}")
                    continue
                plain[str(k)] = walk(v, value_position(node, k))
            return plain
        if isinstance(node, list):
            return [walk(v, value_position(node, i)) for i, v in enumerate(node)]
        if isinstance(node, str):
            return substitute(node, position)
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    return walk(tree, _start(tree))


# ---------------------------------------------------------------- structuring errors


def _leaves(error: BaseException, path: list[Any]) -> Iterator[tuple[list[Any], BaseException]]:
    if isinstance(error, (ClassValidationError, IterableValidationError)):
        for sub in error.exceptions:
            step: list[Any] = []
            for note in getattr(sub, "__notes__", []):
                if hasattr(note, "name"):
                    step = [note.name]
                elif hasattr(note, "index"):
                    step = [note.index]
            yield from _leaves(sub, path + step)
    else:
        yield path, error


def _attribute_of(error: BaseException, names: list[str]) -> str | None:
    """The field an attrs validator complained about, if it can be told."""
    for arg in getattr(error, "args", ())[1:2]:
        if isinstance(arg, attrs.Attribute):
            return arg.name
    text = str(error)
    found = []
    for name in names:
        match = re.search(rf"\b{re.escape(name)}\b", text)
        if match:
            found.append((match.start(), -len(name), name))
    return min(found)[2] if found else None


def _message(error: BaseException) -> str:
    if isinstance(error, (TypeError, ValueError)) and error.args and isinstance(error.args[0], str):
        return error.args[0] if len(error.args) > 1 else str(error)
    return format_exception(error, None)


def _structure(
    source: _Source,
    where: Any,
    data: dict[str, Any],
    cls: type,
    prefix: str,
    what: str,
    suffix: str = "",
) -> Any:
    """``cls`` built from ``data`` (keys of the YAML mapping ``where``),
    or None after reporting every error."""
    try:
        return CONVERTER.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as group:
        names = [field.name for field in attrs.fields(cls)]
        for path, error in _leaves(group, []):
            if isinstance(error, ForbiddenExtraKeysError):
                for extra in sorted(error.extra_fields):
                    source.error(
                        path_position(where, [*path, extra], key=True),
                        f"{prefix}unknown {what} {extra!r}{suffix}" + did_you_mean(extra, names),
                    )
            elif isinstance(error, KeyError) and not path[1:]:
                missing = "class" if cls is NodeConfig and path == ["class_"] else (path or [""])[0]
                source.error(
                    _start(where),
                    f"{prefix}missing required {what} {missing!r}{suffix}"
                    if path
                    else f"{prefix}missing required {what}{suffix}",
                )
            elif not path:
                _report_init_error(source, where, data, cls, prefix, what, error)
            else:
                label = ".".join(str(step) for step in path)
                source.error(
                    path_position(where, path), f"{prefix}{what} {label!r}: {_message(error)}"
                )
    except (TypeError, ValueError) as error:
        _report_init_error(source, where, data, cls, prefix, what, error)
    except cattrs.errors.StructureHandlerNotFoundError as error:
        wanted = error.type_
        type_name = getattr(wanted, "__name__", str(wanted))
        fields = [f.name for f in attrs.fields(cls) if f.type in (wanted, type_name)]
        field = fields[0] if fields else None
        position = value_position(where, field) if field in where else _start(where)
        label = f"{what} {field!r}: " if field else ""
        source.error(
            position,
            f"{prefix}{label}a value of type {type_name} cannot be given in a configuration file",
        )
    except Exception as error:  # e.g. a field type cattrs cannot build from YAML
        position = value_position(where, "class") if "class" in where else _start(where)
        source.error(
            position,
            f"{prefix}cannot build {getattr(cls, '__name__', cls)} from "
            f"the configuration: {type(error).__name__}: {error}",
        )
    return None


def _report_init_error(
    source: _Source,
    where: Any,
    data: dict[str, Any],
    cls: type,
    prefix: str,
    what: str,
    error: BaseException,
) -> None:
    """An error raised by the class itself (an attrs validator, ``__attrs_post_init__``)."""
    name = _attribute_of(error, [field.name for field in attrs.fields(cls) if field.name in data])
    if name is not None:
        # A validator may name the key of a mapping parameter at fault: args[2].
        path = [name, *getattr(error, "args", ())[2:3]]
        position = path_position(where, path, key=len(path) > 1)
        source.error(position, f"{prefix}{what} {name!r}: {_message(error)}")
    else:
        source.error(_start(where), f"{prefix}{_message(error)}")


# ---------------------------------------------------------------- the loader


class _Unbuilt(NanoStreamProcessor):
    """Stands in for a node whose class or parameters were wrong, so that the
    graph around it can still be checked."""

    def process_item(self, message: Any) -> Any:
        return message


def _parse(source: _Source, text: str) -> Any:
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    try:
        return yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        position = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = (error.problem or error.context or "invalid YAML").strip()
        if type(error).__name__ == "DuplicateKeyError":
            problem = problem.splitlines()[0]
        source.error(position, f"YAML: {problem}")
    except YAMLError as error:
        source.error((1, 1), f"YAML: {str(error).strip().splitlines()[0]}")
    except Exception as error:  # ruamel.yaml raises a few plain exceptions on odd input
        source.error((1, 1), f"YAML: {type(error).__name__}: {error}")
    return None


@contextlib.contextmanager
def _on_sys_path(directory: str) -> Iterator[None]:
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)


def _build(
    path: str, text: str, environ: typing.Mapping[str, str] | None = None
) -> tuple[NanoStreamGraph | None, list[ConfigError], dict[str, Any]]:
    source = _Source(path, text)
    tree = _parse(source, text)
    if source.errors:
        return None, source.errors, {}
    if not isinstance(tree, CommentedMap):
        source.error(
            _start(tree) if tree is not None else (1, 1),
            "a pipeline file is a mapping with 'pipeline_name' and 'node_sequence'",
        )
        return None, source.errors, {}

    data = _interpolate(tree, source, os.environ if environ is None else environ)
    pipeline = _structure(source, tree, data, PipelineConfig, "", "top-level key")
    if pipeline is None:
        return None, source.errors, {}

    graph = NanoStreamGraph(pipeline.pipeline_name)
    yaml_nodes: dict[str, Any] = {}
    unbuilt: set[str] = set()
    incomplete = False
    seq = tree["node_sequence"]
    for index, raw in enumerate(pipeline.node_sequence):
        where = seq[index]
        if not isinstance(where, CommentedMap):
            source.error(value_position(seq, index), "a node is a mapping with 'name' and 'class'")
            continue
        label = (
            f"node {raw['name']!r}: "
            if isinstance(raw.get("name"), str)
            else f"node #{index + 1}: "
        )
        core = _structure(
            source,
            where,
            {k: v for k, v in raw.items() if k in RESERVED_KEYS},
            NodeConfig,
            label,
            "key",
        )
        if core is None:
            name = raw.get("name")
            if isinstance(name, str) and name not in yaml_nodes:
                yaml_nodes[name] = where
                unbuilt.add(name)
                graph.add(name, _Unbuilt())
            else:
                incomplete = True
            continue
        prefix = f"node {core.name!r}: "
        if core.name in yaml_nodes:
            first = key_position(yaml_nodes[core.name], "name")[0]
            source.error(
                value_position(where, "name"),
                f"{prefix}duplicate node name (first defined on line {first})",
            )
            continue
        yaml_nodes[core.name] = where
        options_data = {k: v for k, v in raw.items() if k in OPTION_KEYS}
        params = {k: v for k, v in raw.items() if k not in RESERVED_KEYS and k not in OPTION_KEYS}
        options = _structure(source, where, options_data, NodeOptions, prefix, "option")

        processor: NanoStreamProcessor | None = None
        try:
            cls = resolve_class(core.class_)
        except ImportPathError as error:
            source.error(value_position(where, "class"), f"{prefix}{error}")
        except Exception as error:
            source.error(
                value_position(where, "class"),
                f"{prefix}cannot load class {core.class_!r}: {type(error).__name__}: {error}",
            )
        else:
            if not (isinstance(cls, type) and issubclass(cls, NanoStreamProcessor)):
                source.error(
                    value_position(where, "class"),
                    f"{prefix}{core.class_!r} is not a NanoStreamProcessor subclass",
                )
            elif attrs.has(cls):
                processor = _structure(
                    source, where, params, cls, prefix, "parameter", f" for {cls.__name__}"
                )
            elif params:
                for key in params:
                    source.error(
                        key_position(where, key),
                        f"{prefix}unknown parameter {key!r}: {cls.__name__} takes none",
                    )
            else:
                try:
                    processor = cls()
                except Exception as error:
                    source.error(
                        value_position(where, "class"),
                        f"{prefix}{cls.__name__}(): {type(error).__name__}: {error}",
                    )

        if processor is None or options is None:
            unbuilt.add(core.name)
            processor = _Unbuilt()
            options = NodeOptions()
        graph.add(core.name, processor, core.parents, **attrs.asdict(options))

    for problem in graph.problems():
        if (
            problem.node in unbuilt
            and "unknown" not in problem.message
            and "cycle" not in problem.message
        ) or ((unbuilt or incomplete) and "no source" in problem.message):
            continue
        where = yaml_nodes.get(problem.node)
        if where is None:
            position = key_position(tree, "node_sequence")
            source.error(position, f"pipeline {pipeline.pipeline_name!r}: {problem.message}")
            continue
        position = value_position(where, "name")
        if problem.key == "parents" and "parents" in where:
            position = value_position(where, "parents")
            quoted = re.search(r"unknown parent '([^']*)'", problem.message)
            parents = where["parents"]
            if quoted and isinstance(parents, CommentedSeq) and quoted.group(1) in parents:
                position = value_position(parents, list(parents).index(quoted.group(1)))
        elif problem.key and problem.key in where:
            position = value_position(where, problem.key)
        source.error(position, f"node {problem.node!r}: {problem.message}")
    return graph, source.errors, yaml_nodes


def check_text(
    text: str,
    path: str = "<string>",
    directory: str | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> list[ConfigError]:
    """Every error in the pipeline ``text``."""
    with _on_sys_path(directory or os.getcwd()):
        return _build(path, text, environ)[1]


def _read(path: str | os.PathLike[str]) -> tuple[str, str]:
    name = os.fspath(path)
    with open(name, encoding="utf-8") as file:
        return name, file.read()


def check_pipeline(path: str | os.PathLike[str]) -> list[ConfigError]:
    """Every error in the pipeline file at ``path``, in file order (empty if none)."""
    try:
        name, text = _read(path)
    except (OSError, UnicodeDecodeError) as error:
        return [ConfigError(os.fspath(path), 1, 1, f"cannot read the file: {error}")]
    directory = str(Path(name).resolve().parent)
    with _on_sys_path(directory):
        errors = _build(name, text)[1]
    return sorted(errors, key=lambda e: (e.line, e.col))


def load_pipeline(path: str | os.PathLike[str]) -> NanoStreamGraph:
    """The graph the pipeline file at ``path`` describes.

    Raises :class:`ConfigErrors` with every error found.
    """
    try:
        name, text = _read(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigErrors(
            [ConfigError(os.fspath(path), 1, 1, f"cannot read the file: {error}")]
        ) from error
    directory = str(Path(name).resolve().parent)
    with _on_sys_path(directory):
        graph, errors, _ = _build(name, text)
    if errors or graph is None:
        raise ConfigErrors(sorted(errors, key=lambda e: (e.line, e.col)))
    return graph


def load_text(text: str, path: str = "<string>") -> NanoStreamGraph:
    """The graph described by the pipeline ``text``."""
    graph, errors, _ = _build(path, text)
    if errors or graph is None:
        raise ConfigErrors(sorted(errors, key=lambda e: (e.line, e.col)))
    return graph
