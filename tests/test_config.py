"""The YAML loader: the broken-config corpus, fuzzing, and configs that run."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import types
import typing
from pathlib import Path

import attrs
import jsonschema
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

import nanostream
from nanostream import ChannelSink, NanoStreamGraph, NodeOptions, run_graph
from nanostream.config import (
    ConfigError,
    ConfigErrors,
    check_pipeline,
    check_text,
    load_pipeline,
)
from nanostream.config._reference import reference_text
from nanostream.config._schema import parameters, pipeline_schema, schema_text
from nanostream.nodes import BUILTIN_NODES, load_builtin

CONFIGS = Path(__file__).parent / "configs"
ROOT = Path(__file__).parent.parent
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.*)$", re.MULTILINE)


ENVIRONMENT = re.compile(r"^# env: ([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.MULTILINE)


def expected_errors(path: Path) -> list[tuple[int, int, str]]:
    found = EXPECT.findall(path.read_text())
    return [(int(line), int(col), message) for line, col, message in found]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_broken_config_corpus(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.findall(path.read_text()):
        monkeypatch.setenv(name, value)
    expected = expected_errors(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    errors = check_pipeline(path)
    assert [(e.line, e.col, e.message) for e in errors] == expected
    with pytest.raises(ConfigErrors) as raised:
        load_pipeline(path)
    assert raised.value.errors == errors


def test_error_format_shows_the_line_and_a_caret() -> None:
    path = CONFIGS / "unknown_parameter.yaml"
    (error,) = check_pipeline(path)
    assert error.format().splitlines() == [
        f"{path}:10:5: error: node 'copy': unknown parameter 'prefx' for "
        "PrintStreamProcessor (did you mean 'prefix'?)",
        '        prefx: "> "',
        "        ^",
    ]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "many.yaml"
    config.write_text(
        textwrap.dedent("""\
        pipeline_name: many
        node_sequence:
          - name: src
            class: ConstantEmitter
            max_loops: ten
            dellay: 1
          - name: printer
            class: PrintStreamProce
            parents: [src, nope]
          - name: sink
            class: BlackHole
            parents: [printer]
            on_error: explode
        """)
    )
    errors = check_pipeline(config)
    assert [(e.line, e.col) for e in errors] == [(5, 16), (6, 5), (8, 12), (9, 20), (13, 15)]


def test_unreadable_file(tmp_path: Path) -> None:
    (error,) = check_pipeline(tmp_path / "missing.yaml")
    assert error.message.startswith("cannot read the file")


def _write_nodes_module(directory: Path, name: str) -> None:
    (directory / f"{name}.py").write_text(
        textwrap.dedent("""\
        import attrs
        from nanostream import NanoStreamProcessor

        @attrs.define
        class Doubler(NanoStreamProcessor):
            \"\"\"Doubles each item.\"\"\"
            factor: int = 2

            def process_item(self, message):
                return message * self.factor
        """)
    )


def _collect(graph: NanoStreamGraph, parent: str) -> list:
    async def main() -> list:
        send, receive = trio.open_memory_channel(100)
        graph.add("collected", ChannelSink(send), [parent])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_graph, graph)
            return [item async for item in receive]

    return trio.run(main)


def test_valid_config_runs_with_a_custom_class(tmp_path: Path, monkeypatch) -> None:
    _write_nodes_module(tmp_path, "nanostream_test_nodes_a")
    monkeypatch.setenv("NANOSTREAM_TEST_FACTOR", "3")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent("""\
        pipeline_name: custom
        node_sequence:
          - name: numbers
            class: SequenceEmitter
            sequence: [1, 2, 3]
          - name: double
            class: nanostream_test_nodes_a:Doubler
            factor: ${NANOSTREAM_TEST_FACTOR}
            parents: [numbers]
            on_error: skip
            buffer_size: 4
          - name: printer
            class: PrintStreamProcessor
            prefix: "${NANOSTREAM_TEST_PREFIX:-> }"
            parents: double
        """)
    )
    assert check_pipeline(config) == []
    graph = load_pipeline(config)
    assert graph.name == "custom"
    assert graph.nodes["double"].options.on_error == "skip"
    assert graph.nodes["double"].options.buffer_size == 4
    assert graph.nodes["printer"].processor.prefix == "> "
    assert _collect(graph, "printer") == [3, 6, 9]
    assert str(tmp_path) not in sys.path


def test_constant_emitter_and_dotted_class_path(tmp_path: Path, capsys) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent("""\
        pipeline_name: constant
        node_sequence:
          - name: src
            class: nanostream.nodes.basic.ConstantEmitter
            thing: hi
            max_loops: 3
          - name: printer
            class: PrintStreamProcessor
            parents: [src]
        """)
    )
    graph = load_pipeline(config)
    assert _collect(graph, "printer") == ["hi", "hi", "hi"]
    assert capsys.readouterr().out == "hi\nhi\nhi\n"


def test_entry_point_classes(monkeypatch) -> None:
    import importlib.metadata

    class FakeEntryPoint:
        name = "Fancy"

        def load(self) -> type:
            return nanostream.BlackHole

    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == "nanostream.nodes":
            return [FakeEntryPoint()]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    text = textwrap.dedent("""\
        node_sequence:
          - name: src
            class: SequenceEmitter
          - name: sink
            class: Fancy
            parents: [src]
          - name: other
            class: Fanci
            parents: [src]
        """)
    (error,) = check_text(text)
    assert error.message == "node 'other': unknown class 'Fanci' (did you mean 'Fancy'?)"


def test_escaped_and_typed_interpolation() -> None:
    from nanostream.config import load_text

    graph = load_text(
        textwrap.dedent("""\
        node_sequence:
          - name: src
            class: ConstantEmitter
            max_loops: ${NANOSTREAM_TEST_UNSET_LOOPS:-2}
            thing: "$${NOT_A_VAR}"
        """)
    )
    processor = graph.nodes["src"].processor
    assert processor.max_loops == 2
    assert processor.thing == "${NOT_A_VAR}"


def test_the_seed_example_reports_only_the_missing_file_nodes() -> None:
    seed = textwrap.dedent("""\
        pipeline_name: watchdog_example
        node_sequence:
          - name: watchdog
            class: WatchdogDirectoryListener
            watchdog_path: inbox
          - name: printer
            class: PrintStreamProcessor
            parents:
              - watchdog
        """)
    errors = check_text(seed)
    from nanostream.nodes import BUILTIN_NODES

    if "WatchdogDirectoryListener" in BUILTIN_NODES:
        assert errors == []
    else:
        assert [e.message for e in errors] == [
            "node 'watchdog': unknown class 'WatchdogDirectoryListener'"
        ]


yaml_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="- :[]{}\n\"'#&*!|>%@`,?abc123$", max_size=200),
    st.builds(
        lambda keys: "\n".join(keys),
        st.lists(
            st.sampled_from(
                [
                    "pipeline_name: x",
                    "node_sequence:",
                    "  - name: a",
                    "    class: SequenceEmitter",
                    "    class: BlackHole",
                    "    parents: [a]",
                    "    parents: a",
                    "  - name: b",
                    "    sequence: [1, 2]",
                    "    on_error: skip",
                    "    max_loops: ${X}",
                    "    class: ConstantEmitter",
                    "    max_loops: -1",
                    "  - 3",
                    "node_sequence: 5",
                    "    dead_letter: a",
                    "  - class: PrintStreamProcessor",
                    "    prefix: {a: 1}",
                ]
            ),
            max_size=15,
        ),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_text)
def test_arbitrary_yaml_never_crashes_the_loader(text: str) -> None:
    errors = check_text(text, environ={})
    assert all(isinstance(error, ConfigError) for error in errors)
    for error in errors:
        assert error.line >= 1 and error.col >= 1
        error.format()


# ------------------------------------------------------------------ schema


def _validator() -> jsonschema.Draft202012Validator:
    schema = pipeline_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _yaml(text: str) -> object:
    return YAML(typ="safe", pure=True).load(text)


GOOD = """\
pipeline_name: good
node_sequence:
  - name: src
    class: ConstantEmitter
    thing: hi
    max_loops: 3
  - name: printer
    class: PrintStreamProcessor
    prefix: "> "
    parents: [src]
    on_error: retry
    retries: 2
  - name: custom
    class: mymodule:Anything
    whatever: 1
    parents: [printer]
"""


def test_schema_accepts_a_good_config() -> None:
    assert list(_validator().iter_errors(_yaml(GOOD))) == []


def test_schema_rejects_a_misspelt_parameter_and_a_wrong_type() -> None:
    validator = _validator()
    misspelt = _yaml(GOOD.replace("prefix:", "prefx:"))
    assert any("prefx" in error.message for error in validator.iter_errors(misspelt))
    wrong = _yaml(GOOD.replace("max_loops: 3", "max_loops: ten"))
    assert list(validator.iter_errors(wrong))
    bad_option = _yaml(GOOD.replace("on_error: retry", "on_error: explode"))
    assert list(validator.iter_errors(bad_option))


def test_schema_describes_parameters_from_attrs() -> None:
    schema = pipeline_schema()
    emitter = schema["$defs"]["ConstantEmitter"]
    assert emitter["additionalProperties"] is False
    assert emitter["properties"]["max_loops"]["anyOf"][0]["type"] == ["integer", "null"]
    assert emitter["properties"]["delay"]["default"] == 0.0
    assert emitter["properties"]["delay"]["description"]
    assert schema["$defs"]["option_retries"]["anyOf"][0]["type"] == "integer"


def test_schema_accepts_environment_references() -> None:
    config = _yaml(GOOD.replace("max_loops: 3", "max_loops: ${LOOPS:-3}"))
    assert list(_validator().iter_errors(config)) == []


def test_checked_in_schema_is_current() -> None:
    checked_in = ROOT / "schemas" / "nanostream.schema.json"
    assert json.loads(checked_in.read_text()) == json.loads(schema_text()), (
        "schemas/nanostream.schema.json is stale: run "
        "`python -m nanostream schema -o schemas/nanostream.schema.json`"
    )


def test_checked_in_node_reference_is_current() -> None:
    checked_in = ROOT / "docs" / "reference.md"
    assert checked_in.read_text() == reference_text(), "docs/reference.md is stale: run `just docs`"


def test_node_reference_covers_every_node_and_parameter() -> None:
    text = reference_text()
    for name in BUILTIN_NODES:
        cls = load_builtin(name)
        assert f"\n### {name}\n" in text
        for parameter, *_ in parameters(cls):
            assert f"| `{parameter}` |" in text
    for field in attrs.fields(NodeOptions):
        assert f"| `{field.name}` |" in text


# ---------------------------------------------------------------- strings never taken as lists


def _collection_parameters(kinds_wanted: frozenset[type] = frozenset({list, tuple, set})) -> list:
    """(node class name, parameter) for every parameter of a built-in node
    whose type is one of ``kinds_wanted`` (or optionally one)."""
    found = []
    for name in sorted(BUILTIN_NODES):
        cls = load_builtin(name)
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            hint = hints[field.name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            kinds = typing.get_args(hint) if union else (hint,)
            origins = {typing.get_origin(kind) or kind for kind in kinds}
            if field.init and origins & kinds_wanted:
                found.append((name, field.alias or field.name))
    return found


COLLECTION_PARAMETERS = _collection_parameters()
MAPPING_PARAMETERS = _collection_parameters(frozenset({dict}))


@pytest.mark.parametrize(("class_name", "parameter"), MAPPING_PARAMETERS)
@pytest.mark.parametrize(("value", "described"), [("abc", "a string 'abc'"), ("[a]", "a list")])
def test_a_mapping_parameter_takes_a_mapping_only(
    class_name: str, parameter: str, value: str, described: str
) -> None:
    cls = load_builtin(class_name)
    lines = [f"    {key}: x" for key in _required(cls) if key != parameter]
    node = ["  - name: node", f"    class: {class_name}", *lines, f"    {parameter}: {value}"]
    text = "\n".join(["node_sequence:", *node])
    messages = [error.message for error in check_text(text)]
    expected = f"node 'node': parameter {parameter!r}: expected a mapping, got {described}"
    assert expected in messages


def test_the_walk_finds_the_collection_parameters() -> None:
    assert {
        ("SequenceEmitter", "sequence"),
        ("WatchdogDirectoryListener", "patterns"),
        ("KafkaConsumer", "topics"),
        ("CsvParser", "fieldnames"),
    } <= set(COLLECTION_PARAMETERS)


@pytest.mark.parametrize(("class_name", "parameter"), COLLECTION_PARAMETERS)
def test_a_string_is_never_taken_as_a_list_in_yaml(class_name: str, parameter: str) -> None:
    cls = load_builtin(class_name)
    lines = [f"    {key}: x" for key in _required(cls) if key != parameter]
    text = "\n".join(
        [
            "node_sequence:",
            "  - name: node",
            f"    class: {class_name}",
            *lines,
            f"    {parameter}: abc",
        ]
    )
    messages = [error.message for error in check_text(text)]
    assert f"node 'node': parameter {parameter!r}: expected a list, got a string 'abc'" in messages


@pytest.mark.parametrize(("class_name", "parameter"), COLLECTION_PARAMETERS)
def test_a_string_is_never_taken_as_a_list_in_python(class_name: str, parameter: str) -> None:
    cls = load_builtin(class_name)
    required = {key: "x" for key in _required(cls) if key != parameter}
    with pytest.raises(TypeError, match=f"^{parameter} must be a list, not a string 'abc'$"):
        cls(**required, **{parameter: "abc"})


def _required(cls: type) -> list[str]:
    return [
        field.alias or field.name
        for field in attrs.fields(cls)
        if field.init and field.default is attrs.NOTHING
    ]


# ---------------------------------------------------------------- environment references


def _processor(text: str, environ: dict[str, str], node: str = "src"):
    from nanostream.config._loader import _build

    graph, errors, _ = _build("<string>", textwrap.dedent(text), environ)
    assert errors == []
    return graph.nodes[node].processor


def test_a_whole_reference_takes_the_yaml_type_of_any_value() -> None:
    text = """\
        node_sequence:
          - name: src
            class: SequenceEmitter
            sequence: ${SEQ}
        """
    assert _processor(text, {"SEQ": "[1, 2, 3]"}).sequence == [1, 2, 3]
    quoted = text.replace("${SEQ}", '["${ONE}", ${ONE}]')
    assert _processor(quoted, {"ONE": "1"}).sequence == ["1", 1]


def test_a_reference_in_flow_style() -> None:
    text = """\
        node_sequence:
          - {name: src, class: ConstantEmitter, max_loops: ${N}, thing: "x${N}"}
        """
    processor = _processor(text, {"N": "4"})
    assert (processor.max_loops, processor.thing) == (4, "x4")


def test_a_default_may_hold_a_reference() -> None:
    text = """\
        node_sequence:
          - name: src
            class: ConstantEmitter
            thing: ${A:-${B}}!
        """
    assert _processor(text, {"B": "bee"}).thing == "bee!"
    assert _processor(text, {"A": "ay", "B": "bee"}).thing == "ay!"
    assert _processor(text.replace("${B}", "${B:-see}"), {}).thing == "see!"


def test_an_empty_value_is_an_empty_string_not_null() -> None:
    text = """\
        node_sequence:
          - name: src
            class: SequenceEmitter
          - name: print
            class: PrintStreamProcessor
            parents: [src]
            prefix: ${PREFIX:-}
        """
    assert _processor(text, {}, "print").prefix == ""
    assert _processor(text, {"PREFIX": ""}, "print").prefix == ""


def test_a_value_from_the_environment_is_not_interpolated_again() -> None:
    text = """\
        node_sequence:
          - name: src
            class: ConstantEmitter
            thing: ${A}
        """
    assert _processor(text, {"A": "${B}", "B": "no"}).thing == "${B}"


def test_a_value_from_the_environment_is_never_echoed() -> None:
    text = textwrap.dedent("""\
        node_sequence:
          - name: src
            class: ConstantEmitter
            max_loops: ${LOOPS}
            delay: [1]
            thing: {a: 1}
          - name: sink
            class: PrintStreamProcessor
            parents: [src]
            prefix: ${PREFIX}
        """)
    errors = check_text(text, environ={"LOOPS": "opensesame", "PREFIX": "[opensesame]"})
    assert [error.message for error in errors] == [
        "node 'src': parameter 'max_loops': expected an integer, got a string "
        "${LOOPS} (value not shown)",
        "node 'src': parameter 'delay': expected a number, got a list",
        "node 'sink': parameter 'prefix': expected a string, got a list",
    ]
    assert not any("opensesame" in error.format() for error in errors)


# ---------------------------------------------------------------- None is never an item


def test_run_processor_refuses_none() -> None:
    from nanostream.testing import run_processor

    with pytest.raises(ValueError, match=r"^items\[1\] is None, and None is never an item"):
        run_processor(nanostream.PrintStreamProcessor(), [1, None])


def test_a_yaml_null_item_is_not_lost_at_run_time(monkeypatch) -> None:
    from nanostream.config import load_text

    graph = load_text(
        textwrap.dedent("""\
        node_sequence:
          - name: src
            class: SequenceEmitter
            sequence: ${ITEMS}
            on_error: skip
        """).replace("${ITEMS}", "[1, 2]")
    )
    graph.nodes["src"].processor.sequence.insert(1, None)
    stats = {}

    async def main() -> list:
        send, receive = trio.open_memory_channel(10)
        graph.add("out", ChannelSink(send), ["src"])
        async with trio.open_nursery() as nursery:
            run = await nursery.start(run_graph, graph)
            items = [item async for item in receive]
        stats.update(run.stats)
        return items

    assert trio.run(main) == [1, 2]
    assert (stats["src"].emitted, stats["src"].skipped) == (2, 1)


# ---------------------------------------------------------------- log_items


def test_log_items_false_keeps_failed_items_out_of_messages() -> None:
    from nanostream.config import load_text

    text = textwrap.dedent("""\
        pipeline_name: private
        log_items: false
        node_sequence:
          - name: src
            class: SequenceEmitter
            sequence: ["card 4111-1111"]
          - name: fail
            class: Map
            function: builtins:int
            parents: [src]
        """)
    graph = load_text(text)
    assert graph.log_items is False
    with pytest.raises(nanostream.NodeError) as raised:
        trio.run(run_graph, graph)
    assert "4111" not in str(raised.value)
    assert str(raised.value) == (
        "node 'fail' failed in process_item: ValueError "
        "(its message and the item are not shown: log_items is off)"
    )
    shown = load_text(text.replace("log_items: false\n", ""))
    with pytest.raises(nanostream.NodeError, match="item: 'card 4111-1111'"):
        trio.run(run_graph, shown)


def test_a_json_null_line_is_an_error_of_its_file_not_a_vanished_record(tmp_path: Path) -> None:
    from nanostream.nodes.files import FileReader
    from nanostream.testing import run_processor

    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\nnull\n{"a": 3}\n')
    with pytest.raises(nanostream.NodeError, match=r"records\.jsonl:2: null, and None is never"):
        run_processor(FileReader(mode="jsonl"), [str(path)])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.text(alphabet="${}:-_AZaz09 \ue000\ue001\ue010\ue011\"'[]{},\n", max_size=60),
)
def test_arbitrary_references_never_crash_the_loader(value: str) -> None:
    text = f"node_sequence:\n  - name: s\n    class: ConstantEmitter\n    thing: {value}\n"
    for error in check_text(text, environ={"A": "1", "Z": "[1"}):
        assert isinstance(error, ConfigError)


def test_a_file_may_hold_millions_of_references() -> None:
    from nanostream.config._environment import PLACEHOLDER, _index, _placeholder

    for index in [0, 255, 256, 4096, 65536, 2**24 - 1]:
        placeholder = _placeholder(index, len("${A}"))
        assert len(placeholder) == 4
        assert PLACEHOLDER.fullmatch(placeholder)
        assert _index(placeholder) == index
    items = ", ".join(f"${{V{index}}}" for index in range(300))
    text = f"""\
        node_sequence:
          - name: src
            class: SequenceEmitter
            sequence: [{items}]
        """
    environ = {f"V{index}": str(index) for index in range(300)}
    assert _processor(text, environ).sequence == list(range(300))
