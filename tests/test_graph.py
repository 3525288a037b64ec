import pytest

from nanostream import GraphError, GraphProblem, NanoStreamGraph, NanoStreamProcessor, NodeOptions
from nanostream.nodes import BlackHole, SequenceEmitter


class Passthrough(NanoStreamProcessor):
    def process_item(self, message):
        return message


def test_add_returns_processor_and_keeps_order():
    graph = NanoStreamGraph()
    source = SequenceEmitter([1])
    assert graph.add("src", source) is source
    graph.add("sink", BlackHole(), "src")  # a single parent may be a string
    assert list(graph.nodes) == ["src", "sink"]
    assert graph.nodes["sink"].parents == ("src",)
    assert graph.children("src") == ["sink"]
    assert len(graph) == 2
    graph.validate()


def test_add_rejects_duplicate_names():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    with pytest.raises(GraphError) as excinfo:
        graph.add("src", SequenceEmitter([2]))
    [problem] = excinfo.value.problems
    assert problem.node == "src"
    assert "already exists" in problem.message
    assert len(graph) == 1


@pytest.mark.parametrize("thing", [object(), Passthrough, lambda item: item, "src"])
def test_add_rejects_non_processors(thing):
    graph = NanoStreamGraph()
    with pytest.raises(GraphError, match="is not a NanoStreamProcessor instance") as excinfo:
        graph.add("x", thing)
    assert excinfo.value.problems[0].node == "x"
    assert len(graph) == 0


def test_add_rejects_unknown_options_with_did_you_mean():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    with pytest.raises(GraphError) as excinfo:
        graph.add("p", Passthrough(), ["src"], on_eror="skip", zzzz=1)
    messages = [problem.message for problem in excinfo.value.problems]
    assert messages == [
        "unknown option 'on_eror' (did you mean 'on_error'?)",
        "unknown option 'zzzz'",
    ]
    assert all(problem.node == "p" for problem in excinfo.value.problems)
    assert "p" not in graph.nodes


def test_add_rejects_invalid_option_values():
    graph = NanoStreamGraph()
    with pytest.raises(GraphError, match="buffer_size must be more than 0"):
        graph.add("src", SequenceEmitter([1]), buffer_size=0)
    with pytest.raises(GraphError, match="on_error"):
        graph.add("src", SequenceEmitter([1]), on_error="explode")


def test_add_passes_options_through():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("p", Passthrough(), ["src"], on_error="retry", retries=5, max_batch=7)
    assert graph.nodes["p"].options == NodeOptions(on_error="retry", retries=5, max_batch=7)


def test_validate_unknown_parent_with_did_you_mean():
    graph = NanoStreamGraph()
    graph.add("source", SequenceEmitter([1]))
    graph.add("sink", BlackHole(), ["sorce"])
    with pytest.raises(GraphError) as excinfo:
        graph.validate()
    assert excinfo.value.problems == [
        GraphProblem("sink", "unknown parent 'sorce' (did you mean 'source'?)", "parents")
    ]
    assert str(excinfo.value) == "node 'sink': unknown parent 'sorce' (did you mean 'source'?)"


def test_validate_unknown_dead_letter_node():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("p", Passthrough(), ["src"], on_error="skip", dead_letter="dql")
    graph.add("dlq", BlackHole(), ["p"])
    problems = graph.problems()
    assert problems == [
        GraphProblem("p", "unknown dead_letter node 'dql' (did you mean 'dlq'?)", "dead_letter")
    ]


def test_validate_reports_cycle_in_order():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("a", Passthrough(), ["src", "c"])
    graph.add("b", Passthrough(), ["a"])
    graph.add("c", Passthrough(), ["b"])
    with pytest.raises(GraphError) as excinfo:
        graph.validate()
    [problem] = excinfo.value.problems
    assert problem.node == "a"
    assert problem.key == "parents"
    assert problem.message == "the graph has a cycle: a -> b -> c -> a"


def test_validate_reports_self_loop():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("a", Passthrough(), ["src", "a"])
    [problem] = graph.problems()
    assert problem.message == "the graph has a cycle: a -> a"


def test_validate_source_with_parents():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("src2", SequenceEmitter([2]), ["src"])
    assert graph.problems() == [
        GraphProblem("src2", "SequenceEmitter is a source and takes no parents", "parents")
    ]


def test_validate_processor_without_parents():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("lonely", Passthrough())
    [problem] = graph.problems()
    assert problem.node == "lonely"
    assert "Passthrough processes items but has no parents" in problem.message


def test_dead_letter_node_needs_no_parents():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]))
    graph.add("p", Passthrough(), ["src"], on_error="skip", dead_letter="dlq")
    graph.add("dlq", BlackHole())
    graph.validate()
    assert graph.inputs("dlq") == ["p"]
    assert graph.children("p") == []


def test_validate_no_source():
    graph = NanoStreamGraph("mine")
    graph.add("a", Passthrough(), ["b"])
    graph.add("b", Passthrough(), ["a"])
    messages = [str(problem) for problem in graph.problems()]
    assert "node 'mine': the pipeline has no source node" in messages


def test_empty_graph_is_invalid():
    with pytest.raises(GraphError, match="no source node"):
        NanoStreamGraph().validate()


def test_validate_reports_all_problems_at_once():
    graph = NanoStreamGraph()
    graph.add("src", SequenceEmitter([1]), ["nowhere"])
    graph.add("lonely", Passthrough())
    graph.add("a", Passthrough(), ["b"])
    graph.add("b", Passthrough(), ["a"])
    graph.add("sink", BlackHole(), ["lonley"])
    with pytest.raises(GraphError) as excinfo:
        graph.validate()
    problems = excinfo.value.problems
    summary = [(problem.node, problem.message.split(":")[0].split(" (")[0]) for problem in problems]
    assert ("src", "unknown parent 'nowhere'") in summary
    assert ("src", "SequenceEmitter is a source and takes no parents") in summary
    assert any(node == "lonely" and "no parents" in message for node, message in summary)
    assert ("sink", "unknown parent 'lonley'") in summary
    assert ("a", "the graph has a cycle") in summary
    assert len(problems) == 5
    # the message lists every problem, one a line
    assert len(str(excinfo.value).splitlines()) == 5
    assert "did you mean 'lonely'" in str(excinfo.value)


def test_topological_order():
    graph = NanoStreamGraph()
    graph.add("sink", BlackHole(), ["b", "a"])
    graph.add("b", Passthrough(), ["a"])
    graph.add("a", Passthrough(), ["src"])
    graph.add("src", SequenceEmitter([1]))
    order = graph.topological_order()
    assert order.index("src") < order.index("a") < order.index("b") < order.index("sink")
