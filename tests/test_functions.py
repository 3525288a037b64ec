"""Filter and Map: functions named by import path, from Python and from YAML."""

import re
import textwrap
from pathlib import Path

import pytest

from nanostream import NanoStreamGraph, NodeError, SequenceEmitter, run_graph
from nanostream.config import ConfigErrors, check_text, load_pipeline, load_text
from nanostream.nodes.functions import Filter, Map
from nanostream.testing import Collector, collect, process_items, run_pipeline


def map_config(function: str, extra: str = "") -> str:
    """A pipeline of a source and a Map node 'change' calling ``function``;
    ``extra`` is one more line of the Map node (line 8)."""
    return f"""\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: change
    class: Map
    parents: [src]
    function: {function}
    {extra}
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch, request) -> str:
    """A module of the user's functions, importable under a name of its own."""
    name = f"user_functions_{request.node.name}".replace("[", "_").replace("]", "_")
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import trio

            def is_even(x):
                return x % 2 == 0

            def is_above_four(x):
                return x > 4

            async def is_big(x):
                await trio.sleep(0)
                return x > 2

            def halve_evens(x):
                return x // 2 if x % 2 == 0 else None

            def repeat(x, times=2):
                for _ in range(times):
                    yield x

            async def scale(x, by=1):
                await trio.sleep(0)
                return x * by

            def fail_on_three(x):
                if x == 3:
                    raise ValueError("three is not allowed")
                return x

            def is_even_but_three(x):
                if x == 3:
                    raise ValueError("three is not allowed")
                return x % 2 == 0

            not_a_function = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


async def test_filter_keeps_items_the_function_accepts(user_module):
    assert await process_items(Filter(f"{user_module}:is_even"), range(7)) == [0, 2, 4, 6]


async def test_filter_invert_keeps_the_others_unchanged():
    # Falsy items that the function accepts are kept too: only None is dropped.
    assert await process_items(Filter("operator:truth", invert=True), [0, 1, "", "a", []]) == [
        0,
        "",
        [],
    ]


async def test_filter_with_an_async_function(user_module):
    assert await process_items(Filter(f"{user_module}.is_big"), [1, 5, 2, 3]) == [5, 3]
    inverted = Filter(f"{user_module}.is_big", invert=True)
    assert await process_items(inverted, [1, 5, 2, 3]) == [1, 2]


async def test_map_replaces_each_item_and_none_drops_it(user_module):
    assert await process_items(Map(f"{user_module}:halve_evens"), range(7)) == [0, 1, 2, 3]


async def test_map_passes_kwargs_to_builtins_and_nested_names():
    assert await process_items(Map("builtins:int", kwargs={"base": 16}), ["ff", "10"]) == [255, 16]
    assert await process_items(Map("builtins:str.upper"), ["a", "b"]) == ["A", "B"]


async def test_map_with_a_generator_sends_each_yield_and_async_is_awaited(user_module):
    repeat = Map(f"{user_module}:repeat", kwargs={"times": 3})
    assert await process_items(repeat, ["a", "b"]) == ["a", "a", "a", "b", "b", "b"]
    scale = Map(f"{user_module}:scale", kwargs={"by": 10})
    assert await process_items(scale, [1, 2]) == [10, 20]


def test_filter_and_map_in_a_graph(user_module):
    graph = NanoStreamGraph("numbers")
    graph.add("numbers", SequenceEmitter([]))
    graph.add("evens", Filter(f"{user_module}:is_even"), ["numbers"])
    graph.add("odds", Filter(f"{user_module}:is_even", invert=True), ["numbers"])
    graph.add("tenfold", Map(f"{user_module}:scale", kwargs={"by": 10}), ["evens"])
    out = run_pipeline(graph, inputs={"numbers": range(2000)})
    assert out["tenfold"] == [10 * n for n in range(0, 2000, 2)]
    assert out["odds"] == list(range(1, 2000, 2))


async def test_filters_in_a_line_keep_drop_dead_letter_and_count_each_item_exactly(user_module):
    # Chained, the filters run fused, their tests called by the chain's own
    # loop: each item's fate and each node's counters must be as unchained.
    graph = NanoStreamGraph("filters")
    graph.add("numbers", SequenceEmitter(list(range(10))))
    graph.add("same", Map("operator:pos"), ["numbers"])
    graph.add(
        "evens",
        Filter(f"{user_module}:is_even_but_three"),
        ["same"],
        on_error="skip",
        dead_letter="letters",
    )
    graph.add("small", Filter(f"{user_module}:is_above_four", invert=True), ["evens"])
    sink = graph.add("sink", Collector(), ["small"])
    letters = graph.add("letters", Collector(), [])
    run = await run_graph(graph)
    assert sink.items == [0, 2, 4]
    assert [letter.item for letter in letters.items] == [3]
    counts = {name: (run.stats[name].received, run.stats[name].emitted) for name in run.stats}
    assert counts["same"] == (10, 10)
    assert counts["evens"] == (10, 5)
    assert (run.stats["evens"].errors, run.stats["evens"].skipped) == (1, 1)
    assert counts["small"] == (5, 3)
    assert counts["sink"] == (3, 0)


async def test_a_failing_item_goes_through_the_error_policy(user_module):
    failing = Map(f"{user_module}:fail_on_three")
    with pytest.raises(NodeError) as excinfo:
        await process_items(failing, range(5))
    message = str(excinfo.value)
    assert "ValueError: three is not allowed" in message
    assert "(item: 3)" in message
    assert await process_items(failing, range(5), on_error="skip") == [0, 1, 2, 4]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_anywhere:f", "cannot import 'no_such_module_anywhere' for function"),
        ("math:sqr", "module 'math' has no function 'sqr' (did you mean 'sqrt'?)"),
        ("math:pi", "function 'math:pi' is not callable: it is float"),
        ("sqrt", "invalid function 'sqrt': expected 'module:function'"),
    ],
)
def test_a_wrong_function_is_an_error_when_the_node_is_built(path, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Map(path)


def test_kwargs_the_function_cannot_take_are_an_error_at_their_line(user_module):
    with pytest.raises(ValueError, match="got an unexpected keyword argument 'tmes'"):
        Map(f"{user_module}:repeat", kwargs={"tmes": 3})
    (error,) = check_text(map_config(f"{user_module}:repeat", "kwargs: {tmes: 3}"), "p.yaml")
    assert str(error) == (
        "p.yaml:8:13: error: node 'change': parameter 'kwargs': kwargs {'tmes': 3} do not fit"
        f" function '{user_module}:repeat': got an unexpected keyword argument 'tmes'"
    )


def test_filter_rejects_a_generator_function(user_module):
    with pytest.raises(ValueError, match="is a generator function; Filter needs"):
        Filter(f"{user_module}:repeat")


def test_config_errors_point_at_the_function():
    text = """\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: keep
    class: Filter
    parents: [src]
    function: math:sqr
  - name: change
    class: Map
    parents: [keep]
    function: math:pi
"""
    errors = [error.format() for error in check_text(text, "p.yaml")]
    assert errors[0].startswith(
        "p.yaml:7:15: error: node 'keep': parameter 'function': module 'math' has no"
        " function 'sqr' (did you mean 'sqrt'?)"
    )
    assert errors[1].startswith(
        "p.yaml:11:15: error: node 'change': parameter 'function': function 'math:pi'"
        " is not callable"
    )
    assert len(errors) == 2


async def test_yaml_pipeline_with_a_module_beside_it(tmp_path: Path):
    (tmp_path / "cleaning_beside_pipeline.py").write_text(
        "def is_word(text):\n    return text.isalpha()\n"
    )
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        """\
node_sequence:
  - name: words
    class: SequenceEmitter
    sequence: ["a", "1", "b2", "cd"]
  - name: words_only
    class: Filter
    function: cleaning_beside_pipeline:is_word
    parents: [words]
  - name: shout
    class: Map
    function: builtins:str.upper
    parents: [words_only]
  - name: digits
    class: Map
    function: builtins:int
    kwargs: {base: 10}
    parents: [invert]
  - name: invert
    class: Filter
    function: cleaning_beside_pipeline:is_word
    invert: true
    parents: [words]
"""
    )
    graph = load_pipeline(pipeline)
    out = await collect(graph, inputs={"words": ["a", "1", "cd", "22"]})
    assert (out["shout"], out["digits"]) == (["A", "CD"], [1, 22])


def test_yaml_function_must_be_a_string():
    with pytest.raises(ConfigErrors, match="parameter 'function': expected a string"):
        load_text(map_config("3"))
