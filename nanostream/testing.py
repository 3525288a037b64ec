"""Helpers for testing your own processors and pipelines.

Feed lists in, get lists out, with the real runtime in between::

    from nanostream.testing import run_pipeline, run_processor

    def test_doubler():
        assert run_processor(Doubler(), [1, 2, 3]) == [2, 4, 6]

    def test_pipeline_file():
        emitted = run_pipeline(
            "pipeline.yaml",
            inputs={"watchdog": ["inbox/a.txt"]},   # items in place of a source
            replace={"copy_the_file": None},         # a sink that writes nothing
        )
        [written] = emitted["copy_the_file"]      # what reached the sink
        assert written.data == "hello\\n"

:func:`run_processor` and :func:`run_pipeline` start their own trio event
loop, so they work from plain pytest functions. Tests that already run in
trio (``async def`` tests under pytest-trio, with ``trio_mode = true`` in
the pytest configuration or the ``@pytest.mark.trio`` marker) await their
twins :func:`process_items` and :func:`collect` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from ._graph import NanoStreamGraph, did_you_mean
from ._processor import NanoStreamProcessor
from ._runtime import run_graph
from .nodes import SequenceEmitter

__all__ = ["Collector", "collect", "process_items", "run_pipeline", "run_processor"]

#: What :func:`collect` and :func:`run_pipeline` accept as a pipeline: a graph,
#: or the path of a YAML pipeline file.
Pipeline = NanoStreamGraph | str | os.PathLike[str]


@attrs.define
class Collector(NanoStreamProcessor):
    """A sink that keeps every item it receives, in order, in ``items``."""

    items: list[Any] = attrs.field(factory=list)

    def process_batch(self, messages: list[Any]) -> None:
        self.items.extend(messages)


class _StandIn(NanoStreamProcessor):
    """What ``replace={name: None}`` puts in place of a node: it does no I/O
    and sends on each item it receives, so what reached the node shows as
    what it emitted."""

    def process_batch(self, messages: list[Any]) -> list[Any]:
        return messages


def _graph_of(pipeline: Pipeline) -> NanoStreamGraph:
    if isinstance(pipeline, NanoStreamGraph):
        return pipeline
    from .config import load_pipeline

    return load_pipeline(pipeline)


def _check_names(graph: NanoStreamGraph, names: Iterable[str], what: str) -> None:
    for name in names:
        if name not in graph.nodes:
            raise KeyError(
                f"{what}: no node named {name!r} in {graph.name!r}"
                + did_you_mean(name, graph.nodes)
            )


def _harness(
    graph: NanoStreamGraph,
    inputs: Mapping[str, Iterable[Any]],
    replace: Mapping[str, NanoStreamProcessor | None],
) -> tuple[NanoStreamGraph, dict[str, Collector]]:
    """A copy of ``graph`` with nodes replaced and inputs fed in, and a
    :class:`Collector` after every node, by node name."""
    _check_names(graph, inputs, "inputs")
    _check_names(graph, replace, "replace")
    harness = NanoStreamGraph(graph.name, log_items=graph.log_items)
    for node in graph:
        processor = node.processor
        if node.name in replace:
            processor = replace[node.name] or (
                SequenceEmitter([]) if node.is_source else _StandIn()
            )
        parents: Iterable[str] = node.parents
        if node.name in inputs:
            items = list(inputs[node.name])
            _refuse_none(items, f"inputs[{node.name!r}]")
            if node.is_source and node.name in replace:
                raise ValueError(
                    f"node {node.name!r} is a source: give it either inputs or a replacement"
                )
            if node.is_source:
                processor = SequenceEmitter(items)
            else:
                # The node receives these items instead of what its parents send.
                feeder = f"{node.name} (inputs)"
                harness.add(feeder, SequenceEmitter(items))
                parents = [feeder]
        harness.add(node.name, processor, parents, **attrs.asdict(node.options))
    collectors = {
        node.name: harness.add(f"{node.name} (emitted)", Collector(), [node.name]) for node in graph
    }
    return harness, collectors


async def collect(
    pipeline: Pipeline,
    inputs: Mapping[str, Iterable[Any]] | None = None,
    *,
    replace: Mapping[str, NanoStreamProcessor | None] | None = None,
) -> dict[str, list[Any]]:
    """Run a pipeline to the end and return what every node emitted.

    ``pipeline`` is a :class:`~nanostream.NanoStreamGraph` or the path of a
    YAML pipeline file (loaded as ``nanostream run`` loads it, modules
    beside it importable).

    ``inputs`` maps node names to items: a source named there emits those
    items instead of its own; any other node receives those items instead
    of what its parents send (the parents still run). ``replace`` maps node
    names to the processors to run in their place; ``None`` stands in a
    node that does no I/O: a source that emits nothing, or a node that
    sends on each item it receives (so a replaced sink's entry is what
    reached it). Sources named in neither run as they are.

    Returns a dict from every node's name to the items it sent on to its
    children, in the order it sent them (dead letters go to the
    ``dead_letter`` node and are not counted). The pipeline is left unchanged.

    Errors: ``KeyError`` for a name in ``inputs`` or ``replace`` that is no
    node; :class:`~nanostream.config.ConfigErrors` for a YAML file with
    errors; otherwise what :func:`~nanostream.run_graph` raises, such as a
    :class:`~nanostream.NodeError` from a node under the ``fail`` policy.

    Cancellation: as :func:`~nanostream.run_graph`: every node that was set
    up runs its teardown.
    """
    harness, collectors = _harness(_graph_of(pipeline), dict(inputs or {}), dict(replace or {}))
    await run_graph(harness)
    return {name: collector.items for name, collector in collectors.items()}


async def process_items(
    processor: NanoStreamProcessor, items: Iterable[Any], **options: Any
) -> list[Any]:
    """Send ``items`` through ``processor`` alone; return what it sent on.

    ``options`` are runtime keys such as ``on_error="skip"``.
    """
    items = list(items)
    _refuse_none(items)
    graph = NanoStreamGraph("test")
    graph.add("input", SequenceEmitter(items))
    graph.add("processor", processor, ["input"], **options)
    return (await collect(graph))["processor"]


def run_processor(
    processor: NanoStreamProcessor, items: Iterable[Any], **options: Any
) -> list[Any]:
    """:func:`process_items` for tests that are not already inside trio."""
    return trio.run(lambda: process_items(processor, items, **options))


def run_pipeline(
    pipeline: Pipeline,
    inputs: Mapping[str, Iterable[Any]] | None = None,
    *,
    replace: Mapping[str, NanoStreamProcessor | None] | None = None,
) -> dict[str, list[Any]]:
    """:func:`collect` for tests that are not already inside trio."""
    return trio.run(lambda: collect(pipeline, inputs, replace=replace))


def _refuse_none(items: list[Any], name: str = "items") -> None:
    """None is never an item: a process_item that returns it sends nothing,
    so a test that feeds it in would test nothing."""
    for index, item in enumerate(items):
        if item is None:
            raise ValueError(
                f"{name}[{index}] is None, and None is never an item "
                "(a node returns None to send nothing)"
            )
