"""Loading a YAML pipeline: parse, interpolate, structure, resolve, build, check."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import sys
import typing
import weakref
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

from .._durations import Duration
from .._graph import NanoStreamGraph, did_you_mean
from .._imports import ImportPathError, import_object
from .._options import NodeOptions
from .._params import describe, positive
from .._processor import NanoStreamProcessor
from ..nodes import ALIASES, BUILTIN_NODES, EMBEDDING_NODES, load_builtin
from . import _environment as env
from ._converter import CONVERTER, NodeConfig
from ._errors import ConfigError, ConfigErrors
from ._nodeclass import declared_but_not_attrs, hook_problems

ENTRY_POINT_GROUP = "nanostream.nodes"
RESERVED_KEYS = ("name", "class", "parents")
OPTION_KEYS = tuple(field.name for field in attrs.fields(NodeOptions))

#: How deep mappings and lists may nest, and how many values a file may hold
#: once its aliases are expanded: a few hundred bytes of nested aliases can
#: otherwise stand for billions of values (the "billion laughs").
MAX_DEPTH = 64
MAX_VALUES = 100_000


@attrs.define
class PipelineConfig:
    """The top level of a pipeline file."""

    node_sequence: list[Any]
    pipeline_name: str = "pipeline"
    log_items: bool = True
    state_dir: str | None = None
    checkpoint_interval: Duration = attrs.field(default=10.0, validator=positive)


# ---------------------------------------------------------------- class resolution


def node_class_names() -> list[str]:
    """Every name ``class:`` accepts without a module path."""
    names = list(BUILTIN_NODES) + list(ALIASES)
    with contextlib.suppress(Exception):
        names += [ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return names


def resolve_class(name: str, *, embedding: bool = False) -> type:
    """The node class ``name`` stands for: a built-in name, ``module:Class``,
    ``module.Class`` or an entry point in the group ``nanostream.nodes``.

    The nodes of ``EMBEDDING_NODES`` are found only with ``embedding``: a
    configuration file cannot give them their live parameters.
    Raises :class:`ImportPathError` (a ``ValueError``) for an unknown name.
    """
    if name in BUILTIN_NODES or name in ALIASES:
        return load_builtin(name)
    if name in EMBEDDING_NODES:
        if embedding:
            return load_builtin(name)
        raise ImportPathError(
            f"{name} is for programs that run the graph themselves (run_graph): "
            "its channel is a live object that no configuration file can hold"
        )
    if ":" not in name:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.name == name:
                return entry_point.load()
    if ":" not in name and "." not in name:
        raise ImportPathError(f"unknown class {name!r}" + did_you_mean(name, node_class_names()))
    return import_object(name, "class")


# ---------------------------------------------------------------- positions


class _Source:
    """The text of one pipeline file, and the errors found in it so far."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.errors: list[ConfigError] = []
        self.unset: set[tuple[int, int]] = set()
        self.references: list[env.Reference] = []
        self.secrets = env.Secrets()
        self.from_environment: set[tuple[int, int]] = set()

    def error(
        self, position: tuple[int, int], message: str, *, unset: bool = False, hide: bool = False
    ) -> None:
        """Record an error at ``position``; with ``hide``, the value of the
        key there is starred out of the source line shown (a setting that
        may be a password)."""
        if unset:
            self.unset.add(position)
        elif position in self.unset:
            return  # the value is wrong only because a variable is missing
        message = env.unmask(message, self.references)
        message = self.secrets.hide(message, everywhere=position in self.from_environment)
        line, col = position
        source_line = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        if source_line is not None:
            source_line = env.hide_passwords(source_line)
            key, colon, value = source_line.partition(":")
            if hide and colon and len(key) >= col - 1:
                source_line = key + colon + re.sub(r"\S", "*", value)
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


class _TooBig(Exception):
    """The tree nests deeper than MAX_DEPTH or holds more than MAX_VALUES."""

    def __init__(self, position: tuple[int, int], message: str) -> None:
        super().__init__(message)
        self.position = position


def _interpolate(tree: Any, source: _Source, environ: typing.Mapping[str, str]) -> Any:
    """A plain copy of ``tree`` (dicts, lists, scalars) with ``${VAR}`` and
    ``${VAR:-default}`` substituted in strings; ``$${`` stays a literal ``${``.

    A plain scalar that is one reference and nothing else takes the YAML
    type of the value, whatever it is: ``${N}`` with ``N=3`` is the integer
    3, ``${SEQ}`` with ``SEQ='[1, 2]'`` a list. Quoted, it stays a string.

    Raises :class:`_TooBig` past :data:`MAX_DEPTH` levels or
    :data:`MAX_VALUES` values, counting each expansion of an alias.
    """
    count = 0
    scalar_yaml = YAML(typ="safe", pure=True)

    def typed(text: str, position: tuple[int, int], depth: int) -> Any:
        try:
            value = scalar_yaml.load(text)
        except Exception:
            return text  # not YAML: the string itself
        return walk(value, position, depth, substitute=False)

    def substituted(text: str, position: tuple[int, int], depth: int) -> Any:
        result = env.substitute(text, source.references, environ)
        for name in result.missing:
            source.error(
                position,
                f"environment variable {name!r} is not set "
                f"(write ${{{name}:-default}} to give a default)",
                unset=True,
            )
        for name in result.names:
            source.secrets.add(environ[name], name)
            source.from_environment.add(position)
        whole = type(text) is str and env.PLACEHOLDER.fullmatch(text)
        if not result.missing and whole and result.value.strip():
            return typed(result.value, position, depth)  # empty stays "", not null
        return result.value

    def walk(node: Any, position: tuple[int, int], depth: int, substitute: bool = True) -> Any:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise _TooBig(
                position,
                f"the file holds more than {MAX_VALUES:,} values once its aliases are "
                "expanded (aliases of aliases multiply; a large data set belongs in a "
                "file that a source reads)",
            )
        if isinstance(node, dict | list) and depth >= MAX_DEPTH:
            raise _TooBig(position, f"mappings and lists nest more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            plain = {}
            for k, v in node.items():
                if not isinstance(k, str):
                    source.error(key_position(node, k), f"keys are names, not {describe(k)}")
                    continue
                plain[env.unmask(str(k), source.references)] = walk(
                    v, value_position(node, k), depth + 1, substitute
                )
            return plain
        if isinstance(node, list):
            return [
                walk(v, value_position(node, i), depth + 1, substitute) for i, v in enumerate(node)
            ]
        if isinstance(node, str):
            if substitute and "${" in node:
                source.error(position, env.malformed(node), unset=True)
            if substitute and env.PLACEHOLDER.search(node):
                return substituted(node, position, depth)
            return str(node) if substitute else node
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    return walk(tree, _start(tree), 0)


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
    also: typing.Sequence[str] = (),
) -> Any:
    """``cls`` built from ``data`` (keys of the YAML mapping ``where``),
    or None after reporting every error."""
    try:
        return CONVERTER.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as group:
        names = [field.alias or field.name for field in attrs.fields(cls) if field.init]
        for path, error in _leaves(group, []):
            if isinstance(error, ForbiddenExtraKeysError):
                for extra in sorted(error.extra_fields):
                    source.error(
                        path_position(where, [*path, extra], key=True),
                        f"{prefix}unknown {what} {extra!r}{suffix}"
                        + did_you_mean(extra, [*names, *also]),
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
        # A validator may name the key of a mapping parameter at fault, args[2]:
        # the error points at the key, and its value (a password?) is not shown.
        path = [name, *getattr(error, "args", ())[2:3]]
        position = path_position(where, path, key=len(path) > 1)
        source.error(position, f"{prefix}{what} {name!r}: {_message(error)}", hide=len(path) > 1)
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
    except RecursionError:
        source.error(_too_deep(text), f"mappings and lists nest more than {MAX_DEPTH} levels deep")
    except Exception as error:  # ruamel.yaml raises a few plain exceptions on odd input
        source.error((1, 1), f"YAML: {type(error).__name__}: {error}")
    return None


def _too_deep(text: str) -> tuple[int, int]:
    """Where ``text`` first nests deeper than :data:`MAX_DEPTH`, found with
    the YAML scanner, which does not recurse as the parser does."""
    depth = 0
    with contextlib.suppress(Exception):
        for token in YAML(typ="safe", pure=True).scan(text):
            kind = type(token).__name__
            if kind.endswith("StartToken") and kind != "StreamStartToken":
                depth += 1
                if depth > MAX_DEPTH:
                    return (token.start_mark.line + 1, token.start_mark.column + 1)
            elif kind.endswith("EndToken") and kind != "StreamEndToken":
                depth -= 1
    return (1, 1)


@contextlib.contextmanager
def on_sys_path(directory: str) -> Iterator[None]:
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)


def _processor(
    source: _Source, where: Any, params: dict[str, Any], cls: Any, written: str, prefix: str
) -> NanoStreamProcessor | None:
    """The node ``cls`` built from ``params``, or None after reporting every
    mistake of the class and of the parameters."""
    if not (isinstance(cls, type) and issubclass(cls, NanoStreamProcessor)):
        source.error(
            value_position(where, "class"),
            f"{prefix}{written!r} is not a NanoStreamProcessor subclass",
        )
        return None
    problems = hook_problems(cls)
    for problem in problems:
        source.error(value_position(where, "class"), f"{prefix}{problem}")
    keys = [*RESERVED_KEYS, *OPTION_KEYS]
    if attrs.has(cls):
        processor = _structure(
            source, where, params, cls, prefix, "parameter", f" for {cls.__name__}", also=keys
        )
        if processor is not None:
            _check_items(source, where, params, cls, prefix)
        return None if problems else processor
    if params:
        declared = declared_but_not_attrs(cls)
        hint = (
            f"; {cls.__name__} declares {', '.join(map(repr, declared))} but is not an attrs "
            "class: decorate it with @attrs.define to make its fields parameters"
            if declared
            else ""
        )
        for key in params:
            source.error(
                key_position(where, key),
                f"{prefix}unknown parameter {key!r}: {cls.__name__} takes none"
                + (hint or did_you_mean(key, keys)),
            )
        return None
    try:
        processor = cls()
    except Exception as error:
        source.error(
            value_position(where, "class"),
            f"{prefix}{cls.__name__}(): {type(error).__name__}: {error}",
        )
        return None
    return None if problems else processor


def _check_items(
    source: _Source, where: Any, params: dict[str, Any], cls: type, prefix: str
) -> None:
    """Report a null where a source's items are given: None is never an item.

    A field says it holds items with ``metadata={"emits": "each"}`` (a list
    of items) or ``"whole"`` (one item).
    """
    for field in attrs.fields(cls):
        emits = field.metadata.get("emits")
        value = params.get(field.alias or field.name)
        name = field.alias or field.name
        if emits == "whole" and name in params and value is None:
            source.error(
                value_position(where, name),
                f"{prefix}parameter {name!r} is null, and None is never an item "
                "(quote it, 'null', for the string)",
            )
        elif emits == "each" and isinstance(value, list):
            for index, item in enumerate(value):
                if item is None:
                    source.error(
                        path_position(where, [name, index]),
                        f"{prefix}parameter {name!r}: item {index + 1} is null, and None is "
                        "never an item (quote it, 'null', for the string)",
                    )


def _build(
    path: str, text: str, environ: typing.Mapping[str, str] | None = None
) -> tuple[NanoStreamGraph | None, list[ConfigError], dict[str, Any]]:
    source = _Source(path, text)
    masked, source.references = env.mask(text)
    tree = _parse(source, masked)
    if tree is None:
        if not source.errors:
            source.error(
                (1, 1),
                "the file is empty: a pipeline file is a mapping with "
                "'pipeline_name' and 'node_sequence'",
            )
        return None, source.errors, {}
    if not isinstance(tree, CommentedMap):
        source.error(
            _start(tree),
            "a pipeline file is a mapping with 'pipeline_name' and 'node_sequence'",
        )
        return None, source.errors, {}

    try:
        data = _interpolate(tree, source, os.environ if environ is None else environ)
    except _TooBig as error:
        source.error(error.position, str(error))
        return None, source.errors, {}
    pipeline = _structure(source, tree, data, PipelineConfig, "", "top-level key")
    if pipeline is None:
        # Those errors are reported; the nodes may still be checked.
        if not isinstance(data.get("node_sequence"), list):
            return None, source.errors, {}
        name = data.get("pipeline_name")
        pipeline = PipelineConfig(
            data["node_sequence"], name if isinstance(name, str) else "pipeline"
        )

    graph = NanoStreamGraph(
        pipeline.pipeline_name,
        log_items=pipeline.log_items,
        state_dir=pipeline.state_dir,
        checkpoint_interval=pipeline.checkpoint_interval,
    )
    yaml_nodes: dict[str, Any] = {}
    unbuilt: set[str] = set()
    incomplete = False
    seq = tree["node_sequence"]
    for index, raw in enumerate(pipeline.node_sequence):
        where = seq[index] if isinstance(seq, CommentedSeq) else None
        if not isinstance(where, CommentedMap) or not isinstance(raw, dict):
            source.error(
                value_position(seq, index)
                if isinstance(seq, CommentedSeq)
                else value_position(tree, "node_sequence"),
                "a node is a mapping with 'name' and 'class'",
            )
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
            processor = _processor(source, where, params, cls, core.class_, prefix)

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
    _SECRETS[graph] = source.secrets
    return graph, source.errors, yaml_nodes


def check_text(
    text: str,
    path: str = "<string>",
    directory: str | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> list[ConfigError]:
    """Every error in the pipeline ``text``, in text order (empty if none).

    ``environ`` stands for ``os.environ`` in ``${VAR}`` references."""
    with on_sys_path(directory or os.getcwd()):
        errors = _build(path, text, environ)[1]
    return sorted(errors, key=lambda e: (e.line, e.col))


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
    with on_sys_path(directory):
        errors = _build(name, text)[1]
    return sorted(errors, key=lambda e: (e.line, e.col))


#: The values each loaded graph took from the environment.
_SECRETS: weakref.WeakKeyDictionary[NanoStreamGraph, env.Secrets] = weakref.WeakKeyDictionary()


def secrets_of(graph: NanoStreamGraph) -> env.Secrets:
    """What ``graph``'s file took from the environment, to be hidden from
    whatever is printed or logged about it (empty for any other graph)."""
    return _SECRETS.get(graph) or env.Secrets()


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
    with on_sys_path(directory):
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
