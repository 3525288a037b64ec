"""Test cases for a pipeline file, written in YAML beside it, run by ``nanostream test``.

A test file ``NAME.test.yaml`` holds cases for the pipeline ``NAME.yaml``
beside it (or the file its ``pipeline`` key names). Each case gives items
for named nodes and what named nodes must emit, as in Redpanda Connect's
config tests::

    pipeline: pipeline.yaml          # optional: NAME.yaml by default
    replace: [write]                 # nodes that do no I/O in any case
    cases:
      - name: shouts each line
        inputs:
          shout: [hello, world]      # items fed to a node
        expect:
          shout: [HELLO, WORLD]      # exactly these, in this order
          write:                     # or conditions
            contains: [HELLO]
            length: 2
            json_schema: {type: string}

Every source not given ``inputs`` emits nothing, so no case reads a real
folder, topic or socket; a node listed under ``replace`` is stood in for
by one that does no I/O and sends on what it receives (see
:func:`nanostream.testing.collect`). Emitted items are compared in their
JSON form: an attrs instance (such as ``FileData``) as a mapping of its
fields, a tuple as a list, an exception as ``"TypeName: message"``.

The format's JSON Schema is :data:`TESTS_SCHEMA` (``nanostream test
--schema``); a test file is checked against it before anything runs, and
every error is reported as ``file:line:col``.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import trio
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ._graph import NanoStreamGraph, did_you_mean
from ._imports import forget_modules
from ._runtime import NodeError
from .config import ConfigError, ConfigErrors, load_pipeline
from .config._loader import path_position
from .testing import collect

#: The suffix that marks a test file; ``NAME.test.yaml`` tests ``NAME.yaml``.
SUFFIX = ".test.yaml"

#: Folders never searched for test files.
_SKIPPED_FOLDERS = {"__pycache__", "node_modules", "site-packages"}

_ITEMS = {"type": "array", "description": "Items, in order."}

_CONDITIONS = {
    "type": "object",
    "description": "Conditions on what the node emitted; every one given must hold.",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "equals": {**_ITEMS, "description": "Exactly these items, in this order."},
        "unordered": {**_ITEMS, "description": "Exactly these items, in any order."},
        "contains": {**_ITEMS, "description": "Each of these items, among any others."},
        "length": {"type": "integer", "minimum": 0, "description": "How many items."},
        "json_schema": {
            "type": ["object", "boolean"],
            "description": "A JSON Schema (draft 2020-12) that every item must match.",
        },
    },
}

_NODE_NAMES = {
    "type": "array",
    "items": {"type": "string"},
    "description": "Nodes stood in for by one that does no I/O: a source emits nothing, "
    "any other node sends on what it receives.",
}

TESTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nanostream.dev/schemas/nanostream-tests.schema.json",
    "title": "NanoStream pipeline tests",
    "description": "Test cases for a NanoStream pipeline file, run by `nanostream test`.",
    "type": "object",
    "required": ["cases"],
    "additionalProperties": False,
    "properties": {
        "pipeline": {
            "type": "string",
            "description": "The pipeline file, relative to this file; "
            "by default this file's name without '.test'.",
        },
        "replace": {**_NODE_NAMES, "description": _NODE_NAMES["description"] + " In every case."},
        "env": {
            "type": "object",
            "description": "Environment variables set while the pipeline is loaded and "
            "run, for its ${VAR} references.",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "timeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds a case may run before it fails (default 10).",
        },
        "cases": {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/$defs/case"},
        },
    },
    "$defs": {
        "case": {
            "type": "object",
            "required": ["name", "expect"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "description": "What the case shows."},
                "inputs": {
                    "type": "object",
                    "description": "Items by node name: a source emits them instead of "
                    "its own, any other node receives them instead of its parents' items.",
                    "additionalProperties": {**_ITEMS, "items": {"not": {"type": "null"}}},
                },
                "replace": {
                    **_NODE_NAMES,
                    "description": _NODE_NAMES["description"] + " In this case.",
                },
                "expect": {
                    "type": "object",
                    "description": "By node name: the items it must emit, in order, "
                    "or conditions on them.",
                    "minProperties": 1,
                    "additionalProperties": {"oneOf": [_ITEMS, _CONDITIONS]},
                },
            },
        }
    },
}


def schema_text() -> str:
    """:data:`TESTS_SCHEMA` as the text checked in under ``schemas/``."""
    return json.dumps(TESTS_SCHEMA, indent=2) + "\n"


class TestFileError(Exception):
    """A test file (or its pipeline) that cannot be run: every error found."""

    __test__ = False  # not a pytest test class

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(error.format() for error in errors))


@attrs.frozen
class Case:
    """One test case, and the line of the test file it starts on."""

    name: str
    line: int
    inputs: dict[str, list[Any]]
    replace: frozenset[str]
    expect: dict[str, Any]


@attrs.frozen
class TestFile:
    """A checked test file: its pipeline and its cases."""

    __test__ = False  # not a pytest test class

    path: str
    pipeline: str
    timeout: float
    cases: list[Case]
    env: dict[str, str] = attrs.field(factory=dict)

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """``env`` set in ``os.environ``, and what was there before restored after."""
        before = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@attrs.frozen
class Outcome:
    """How one case went: ``failures`` is empty when it passed."""

    file: TestFile
    case: Case
    failures: list[str]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


# ---------------------------------------------------------------- finding test files


def find_test_files(paths: list[str]) -> list[str]:
    """The test files that ``paths`` name or hold, in a stable order.

    A folder is searched for ``*.test.yaml`` files (hidden folders and
    virtual environments left out); a pipeline file ``NAME.yaml`` stands
    for the ``NAME.test.yaml`` beside it. Raises ``FileNotFoundError`` for
    a path that does not exist or a pipeline without a test file.
    """
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(os.path.normpath(found) for found in _search(path))
        elif not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file or folder")
        elif path.endswith(SUFFIX):
            found.append(path)
        else:
            stem, _ = os.path.splitext(path)
            beside = stem + SUFFIX
            if not os.path.exists(beside):
                name = os.path.basename(beside)
                raise FileNotFoundError(f"{path}: no test file {name} beside it")
            found.append(beside)
    return list(dict.fromkeys(found))


def _search(folder: str) -> Iterator[str]:
    for root, folders, files in os.walk(folder):
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".")
            and name not in _SKIPPED_FOLDERS
            and not os.path.exists(os.path.join(root, name, "pyvenv.cfg"))
        ]
        for name in files:
            if name.endswith(SUFFIX):
                yield os.path.join(root, name)


# ---------------------------------------------------------------- reading a test file


def read_test_file(path: str) -> tuple[TestFile, NanoStreamGraph]:
    """The test file at ``path``, checked against :data:`TESTS_SCHEMA` and
    against its pipeline, with the pipeline's graph.

    Raises :class:`TestFileError` listing every error, each with its line
    and column, the pipeline's own errors included.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TestFileError([ConfigError(path, 1, 1, f"cannot read the file: {error}")]) from None
    lines = text.splitlines()

    def error_at(position: tuple[int, int], message: str) -> ConfigError:
        line, col = position
        source = lines[line - 1] if 0 < line <= len(lines) else None
        return ConfigError(path, line, col, message, source)

    try:
        tree = YAML(typ="rt", pure=True).load(text)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        position = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise TestFileError([error_at(position, f"YAML: {problem}")]) from None
    data = _plain_yaml(tree)
    validator = jsonschema.Draft202012Validator(TESTS_SCHEMA)
    errors = sorted(
        (
            error_at(path_position(tree, list(error.absolute_path)), _schema_message(error))
            for error in validator.iter_errors(data)
        ),
        key=lambda error: (error.line, error.col),
    )
    if errors:
        raise TestFileError(errors)

    pipeline = data.get("pipeline") or os.path.basename(path)[: -len(SUFFIX)] + ".yaml"
    pipeline_path = os.path.join(os.path.dirname(path), pipeline)
    # Edited since they were last imported, perhaps.
    forget_modules(os.path.dirname(os.path.abspath(pipeline_path)))
    if not os.path.exists(pipeline_path):
        position = path_position(tree, ["pipeline"]) if "pipeline" in data else (1, 1)
        raise TestFileError([error_at(position, f"no pipeline file {pipeline_path}")])
    env = {name: _env_text(value) for name, value in data.get("env", {}).items()}
    try:
        with TestFile(path, pipeline_path, 0, [], env).environment():
            graph = load_pipeline(pipeline_path)
    except ConfigErrors as error:
        raise TestFileError(error.errors) from None

    def unknown(where: list[Any], name: str) -> ConfigError:
        return error_at(
            path_position(tree, where, key=isinstance(where[-1], str)),
            f"no node named {name!r} in pipeline {graph.name!r}" + did_you_mean(name, graph.nodes),
        )

    shared = data.get("replace", [])
    errors += [
        unknown(["replace", i], name) for i, name in enumerate(shared) if name not in graph.nodes
    ]
    cases = []
    for index, case in enumerate(data["cases"]):
        where: list[Any] = ["cases", index]
        for key in ("inputs", "expect"):
            errors += [
                unknown([*where, key, name], name)
                for name in case.get(key, {})
                if name not in graph.nodes
            ]
        replace = case.get("replace", [])
        errors += [
            unknown([*where, "replace", i], name)
            for i, name in enumerate(replace)
            if name not in graph.nodes
        ]
        for name, expected in case["expect"].items():
            if isinstance(expected, dict) and "json_schema" in expected:
                schema = expected["json_schema"]
                try:
                    jsonschema.validators.validator_for(schema).check_schema(schema)
                except jsonschema.SchemaError as error:
                    place = [*where, "expect", name, "json_schema", *error.absolute_path]
                    errors.append(
                        error_at(path_position(tree, place), f"not a JSON Schema: {error.message}")
                    )
        for name in case.get("inputs", {}):
            if name in replace or name in shared:
                node = graph.nodes.get(name)
                if node is not None and node.is_source:
                    errors.append(
                        error_at(
                            path_position(tree, [*where, "inputs", name], key=True),
                            f"source {name!r} is replaced: give it inputs or replace it, not both",
                        )
                    )
        cases.append(
            Case(
                name=case["name"],
                line=path_position(tree, where)[0],
                inputs=case.get("inputs", {}),
                replace=frozenset(shared) | frozenset(replace),
                expect=case["expect"],
            )
        )
    if errors:
        raise TestFileError(sorted(errors, key=lambda error: (error.line, error.col)))
    timeout = float(data.get("timeout", 10.0))
    return TestFile(path, pipeline_path, timeout, cases, env), graph


def _env_text(value: Any) -> str:
    """An environment variable's text for a YAML scalar: ``true``, ``8080``, ``x``."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _plain_yaml(node: Any) -> Any:
    """Round-trip YAML as plain dicts, lists and scalars, for the schema check."""
    if isinstance(node, dict):
        return {key: _plain_yaml(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain_yaml(value) for value in node]
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _schema_message(error: jsonschema.ValidationError) -> str:
    place = ".".join(str(step) for step in error.absolute_path)
    if not place and error.validator == "type":
        return "a test file is a mapping with 'cases' (and 'pipeline', 'replace', 'env', 'timeout')"
    if error.validator == "oneOf":
        # Expected items: a list, or a mapping of conditions.
        wrong = [e for e in error.context or [] if e.relative_schema_path[0] == 1]
        if isinstance(error.instance, dict) and wrong:
            return _schema_message(wrong[0])
        conditions = ", ".join(_CONDITIONS["properties"])
        return f"{place}: expected a list of items, or conditions ({conditions})"
    if error.validator == "not" and error.instance is None:
        return f"{place}: null is never an item (a node returns None to send nothing)"
    if error.validator == "additionalProperties":
        allowed = error.schema.get("properties", {})
        extra = [key for key in error.instance if key not in allowed]
        if extra:
            hint = did_you_mean(extra[0], allowed)
            return f"{place + ': ' if place else ''}unknown key {extra[0]!r}{hint}"
    return f"{place + ': ' if place else ''}{error.message}"


# ---------------------------------------------------------------- running cases


def run_test_file(
    test_file: TestFile, graph: NanoStreamGraph, selected: str | None = None
) -> Iterator[Outcome]:
    """Run the cases of ``test_file`` (those whose name contains ``selected``,
    if given), each on a freshly loaded pipeline, yielding how each went as
    soon as it has run."""
    cases = [case for case in test_file.cases if selected is None or selected in case.name]
    try:
        for index, case in enumerate(cases):
            started = time.perf_counter()
            with test_file.environment():
                fresh = graph if index == 0 else load_pipeline(test_file.pipeline)
                failures = _run_case(test_file, case, fresh)
            yield Outcome(test_file, case, failures, time.perf_counter() - started)
    finally:
        # The next test file's modules may have the same names as this one's.
        forget_modules(os.path.dirname(os.path.abspath(test_file.pipeline)))


def _run_case(test_file: TestFile, case: Case, graph: NanoStreamGraph) -> list[str]:
    inputs = dict(case.inputs)
    for node in graph:
        if node.is_source and node.name not in inputs and node.name not in case.replace:
            inputs[node.name] = []

    async def run() -> dict[str, list[Any]] | None:
        with trio.move_on_after(test_file.timeout):
            return await collect(graph, inputs, replace=dict.fromkeys(case.replace))
        return None

    try:
        # Relative paths resolve as when the pipeline is run from its folder.
        with contextlib.chdir(os.path.dirname(os.path.abspath(test_file.path))):
            emitted = trio.run(run)
    except NodeError as error:
        return [f"the pipeline failed: {error}"]
    except Exception as error:  # a case must not stop the cases after it
        return [f"the case could not run: {type(error).__name__}: {error}"]
    if emitted is None:
        return [f"did not finish within {test_file.timeout:g}s (the file's 'timeout')"]
    failures = []
    for name, expected in case.expect.items():
        failures += [f"node {name!r}: {text}" for text in _check(plain(emitted[name]), expected)]
    return failures


def plain(value: Any) -> Any:
    """``value`` in its JSON form, as test cases write expected items."""
    if attrs.has(type(value)):
        fields = attrs.fields(type(value))
        return {field.name: plain(getattr(value, field.name)) for field in fields}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return value


def _check(emitted: list[Any], expected: Any) -> list[str]:
    """What is wrong with ``emitted`` against a list or conditions (empty if nothing)."""
    conditions = expected if isinstance(expected, dict) else {"equals": expected}
    failures = []
    if "equals" in conditions and not _same(emitted, conditions["equals"]):
        failures.append("emitted other items than expected\n" + diff(conditions["equals"], emitted))
    if "unordered" in conditions:
        wanted = conditions["unordered"]
        if not _same(_sorted(emitted), _sorted(wanted)):
            failures.append(
                "emitted other items than expected, in any order\n"
                + diff(_sorted(wanted), _sorted(emitted))
            )
    if "contains" in conditions:
        missing = [
            item for item in conditions["contains"] if not any(_same(item, e) for e in emitted)
        ]
        if missing:
            failures.append(
                f"did not emit {_dump(missing)[1:-1]}; it emitted {len(emitted)} items:\n"
                + _indent("\n".join(_dump(item) for item in emitted))
            )
    if "length" in conditions and len(emitted) != conditions["length"]:
        failures.append(f"emitted {len(emitted)} items, expected {conditions['length']}")
    if "json_schema" in conditions:
        schema = conditions["json_schema"]
        validator = jsonschema.validators.validator_for(schema)(schema)
        for index, item in enumerate(emitted):
            error = jsonschema.exceptions.best_match(validator.iter_errors(item))
            if error is not None:
                place = "".join(f"[{step!r}]" for step in error.absolute_path)
                failures.append(
                    f"item {index} does not match the JSON Schema: {place}{' ' if place else ''}"
                    f"{error.message}\n{_indent(_dump(item))}"
                )
    return failures


def _same(a: Any, b: Any) -> bool:
    """Equality as in JSON: ``1 == 1.0``, but ``True`` is not ``1``; NaN equals NaN."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=_dump)


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def diff(expected: list[Any], emitted: list[Any]) -> str:
    """A unified diff of two lists of items, one item per line in JSON."""
    lines = difflib.unified_diff(
        [_dump(item) for item in expected],
        [_dump(item) for item in emitted],
        "expected",
        "emitted",
        lineterm="",
        n=3,
    )
    return _indent("\n".join(lines))


def junit_xml(outcomes: list[Outcome], broken: dict[str, list[ConfigError]]) -> str:
    """The outcomes as a JUnit XML report, the format CI servers (Jenkins,
    GitLab, GitHub Actions' test reporters) show: one ``testsuite`` per test
    file, one ``testcase`` per case, a ``failure`` for each failed case and
    an ``error`` for each test file that could not be run (``broken`` maps
    its path to its errors)."""
    from xml.etree import ElementTree

    suites: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        suites.setdefault(outcome.file.path, []).append(outcome)
    root = ElementTree.Element("testsuites", name="nanostream test")
    for path, cases in suites.items():
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=path,
            tests=str(len(cases)),
            failures=str(sum(not outcome.passed for outcome in cases)),
            errors="0",
            time=f"{sum(outcome.seconds for outcome in cases):.3f}",
        )
        for outcome in cases:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=path,
                name=outcome.case.name,
                file=path,
                line=str(outcome.case.line),
                time=f"{outcome.seconds:.3f}",
            )
            if not outcome.passed:
                failure = ElementTree.SubElement(
                    case, "failure", message=outcome.failures[0].splitlines()[0]
                )
                failure.text = "\n".join(outcome.failures)
    for path, errors in broken.items():
        suite = ElementTree.SubElement(
            root, "testsuite", name=path, tests="1", failures="0", errors="1", time="0"
        )
        case = ElementTree.SubElement(suite, "testcase", classname=path, name=path)
        error = ElementTree.SubElement(case, "error", message=str(errors[0]))
        error.text = "\n".join(each.format() for each in errors)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
