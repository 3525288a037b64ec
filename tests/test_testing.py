import pytest
import trio

from nanostream import NanoStreamGraph, NanoStreamProcessor, NodeError, SequenceEmitter
from nanostream.config import ConfigErrors
from nanostream.nodes.files import FileData, FileWriter
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


def test_run_pipeline_returns_what_every_node_emitted():
    graph = pipeline()
    result = run_pipeline(graph)
    assert list(result) == ["numbers", "double", "words", "split", "both", "dlq"]
    assert result["numbers"] == [1, 2, 3]
    assert result["double"] == [2, 4, 6]
    assert result["split"] == ["x", "y"]
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
    with pytest.raises(KeyError, match="inputs: no node named 'nope' in 'demo'"):
        await collect(pipeline(), {"nope": [1]})
    with pytest.raises(KeyError, match=r"replace: no node named 'dobule' .*did you mean 'double'"):
        await collect(pipeline(), replace={"dobule": None})


def test_inputs_for_a_processor_replace_what_its_parents_send():
    result = run_pipeline(pipeline(), {"both": [100]})
    # the parents still run, but 'both' receives only the given items
    assert result["double"] == [2, 4, 6]
    assert result["both"] == [200]


def test_replace_a_node_with_another_processor():
    result = run_pipeline(pipeline(), {"words": []}, replace={"double": Identity()})
    assert result["double"] == [1, 2, 3]
    assert result["both"] == [2, 4, 6]


def test_replace_with_none_stands_in_without_io(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    graph = NanoStreamGraph("write")
    graph.add("numbers", SequenceEmitter([1, 2]))
    graph.add("write", FileWriter(path=str(blocker / "out")), ["numbers"])
    # the real FileWriter cannot write under a file
    with pytest.raises(NodeError):
        run_pipeline(graph)
    result = run_pipeline(graph, replace={"write": None, "numbers": None})
    assert result == {"numbers": [], "write": []}
    result = run_pipeline(graph, {"numbers": ["a", "b"]}, replace={"write": None})
    assert result == {"numbers": ["a", "b"], "write": ["a", "b"]}
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_source_takes_inputs_or_a_replacement_not_both():
    with pytest.raises(ValueError, match="node 'numbers' is a source"):
        run_pipeline(pipeline(), {"numbers": [1]}, replace={"numbers": None})


YAML_PIPELINE = """\
pipeline_name: shout
node_sequence:
  - name: watchdog
    class: WatchdogDirectoryListener
    watchdog_path: inbox
  - name: read
    class: FileReader
    parents: [watchdog]
  - name: shout
    class: shouting:Shout
    parents: [read]
  - name: write
    class: FileWriter
    path: outbox
    parents: [shout]
"""

SHOUT_MODULE = """\
from nanostream import NanoStreamProcessor

class Shout(NanoStreamProcessor):
    def process_item(self, message):
        return str(message).upper()
"""


@pytest.fixture
def yaml_pipeline(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(YAML_PIPELINE)
    (tmp_path / "shouting.py").write_text(SHOUT_MODULE)
    (tmp_path / "hello.txt").write_text("hello")
    return tmp_path / "pipeline.yaml"


def test_run_pipeline_on_a_yaml_file(yaml_pipeline):
    hello = str(yaml_pipeline.parent / "hello.txt")
    result = run_pipeline(yaml_pipeline, {"watchdog": [hello]}, replace={"write": None})
    assert result == {
        "watchdog": [hello],
        "read": [FileData(hello, "hello")],
        "shout": ["HELLO"],
        "write": ["HELLO"],
    }
    assert not (yaml_pipeline.parent / "outbox").exists()


async def test_collect_a_yaml_file_from_trio(yaml_pipeline):
    result = await collect(
        str(yaml_pipeline), {"shout": ["a", "b"]}, replace={"watchdog": None, "write": None}
    )
    assert result["shout"] == ["A", "B"]
    assert result["read"] == []


def test_run_pipeline_reports_config_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(YAML_PIPELINE.replace("FileReader", "FileRaeder"))
    with pytest.raises(ConfigErrors, match="did you mean 'FileReader'"):
        run_pipeline(path)
