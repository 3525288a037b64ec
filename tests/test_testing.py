import pytest
import trio

from nanostream import NanoStreamGraph, NanoStreamProcessor, NodeError, SequenceEmitter
from nanostream.testing import Collector, collect, process_items, run_pipeline, run_processor


class Double(NanoStreamProcessor):
    def process_item(self, message):
        if message == "bad":
            raise ValueError("bad")
        return message * 2


class Identity(NanoStreamProcessor):
    def process_item(self, message):
        return message


class AsyncSplit(NanoStreamProcessor):
    async def process_item(self, message):
        await trio.sleep(0)
        for part in message.split():
            yield part


def test_run_processor():
    assert run_processor(Double(), [1, 2, 3]) == [2, 4, 6]
    assert run_processor(AsyncSplit(), ["a b", "", "c"]) == ["a", "b", "c"]
    assert run_processor(Double(), []) == []


def test_run_processor_options():
    assert run_processor(Double(), [1, "bad", 3], on_error="skip") == [2, 6]
    with pytest.raises(NodeError, match="node 'processor' failed in process_item"):
        run_processor(Double(), [1, "bad", 3])


async def test_process_items():
    assert await process_items(Double(), range(1000)) == [2 * i for i in range(1000)]
    assert await process_items(Double(), ["bad"], on_error="skip") == []


def pipeline():
    graph = NanoStreamGraph("demo")
    graph.add("numbers", SequenceEmitter([1, 2, 3]))
    graph.add("double", Double(), ["numbers"])
    graph.add("words", SequenceEmitter(["x y"]))
    graph.add("split", AsyncSplit(), ["words"])
    graph.add("both", Double(), ["double", "split"], on_error="skip", dead_letter="dlq")
    graph.add("dlq", Identity(), [])
    return graph


def test_run_pipeline_collects_every_leaf():
    graph = pipeline()
    result = run_pipeline(graph)
    assert set(result) == {"both", "dlq"}
    assert sorted(map(str, result["both"])) == ["12", "4", "8", "xx", "yy"]
    assert result["dlq"] == []
    # the graph itself is left unchanged
    assert list(graph.nodes) == ["numbers", "double", "words", "split", "both", "dlq"]


def test_run_pipeline_replaces_sources():
    result = run_pipeline(pipeline(), {"numbers": [10], "words": ["bad", "ok"]})
    assert result["both"] == [40, "okok"]
    [letter] = result["dlq"]
    assert (letter.node, letter.item) == ("both", "bad")
    assert isinstance(letter.error, ValueError)


def test_run_pipeline_dead_letters_collected():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([]))
    graph.add("proc", Double(), ["src"], on_error="skip", dead_letter="dlq")
    dlq = graph.add("dlq", Collector())
    result = run_pipeline(graph, {"src": [1, "bad"]})
    assert result["proc"] == [2]
    # a leaf's entry holds what it sent on; a Collector sends nothing on
    assert result["dlq"] == []
    assert [letter.item for letter in dlq.items] == ["bad"]


async def test_collect():
    result = await collect(pipeline(), {"numbers": [5]})
    assert sorted(map(str, result["both"])) == ["20", "xx", "yy"]


async def test_collect_unknown_input():
    with pytest.raises(KeyError, match="no node named 'nope' in 'demo'"):
        await collect(pipeline(), {"nope": [1]})
