"""Helpers for testing your own processors and pipelines.

Feed lists in, get lists out, with the real runtime in between::

    from nanostream.testing import run_processor

    def test_doubler():
        assert run_processor(Doubler(), [1, 2, 3]) == [2, 4, 6]

Each helper has an ``async`` twin for tests that already run in trio
(pytest-trio): :func:`process_items` and :func:`collect`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from ._graph import NanoStreamGraph
from ._processor import NanoStreamProcessor
from ._runtime import run_graph
from .nodes import SequenceEmitter

__all__ = ["Collector", "collect", "process_items", "run_pipeline", "run_processor"]


@attrs.define
class Collector(NanoStreamProcessor):
    """A sink that keeps every item it receives, in order, in ``items``."""

    items: list[Any] = attrs.field(factory=list)

    def process_batch(self, messages: list[Any]) -> None:
        self.items.extend(messages)


async def collect(
    graph: NanoStreamGraph, inputs: Mapping[str, Iterable[Any]] | None = None
) -> dict[str, list[Any]]:
    """Run ``graph`` to the end and return what each leaf node sent on.

    ``inputs`` replaces the named sources with the given items. Every node
    without children gets a :class:`Collector` after it; the result maps
    each such node's name to the items it produced, in order. The graph itself is left unchanged.
    """
    inputs = dict(inputs or {})
    unknown = sorted(set(inputs) - set(graph.nodes))
    if unknown:
        raise KeyError(f"no node named {', '.join(map(repr, unknown))} in {graph.name!r}")
    harness = NanoStreamGraph(graph.name, log_items=graph.log_items)
    for node in graph:
        processor = node.processor
        if node.name in inputs:
            items = list(inputs[node.name])
            _refuse_none(items, f"inputs[{node.name!r}]")
            processor = SequenceEmitter(items)
        harness.add(node.name, processor, node.parents, **attrs.asdict(node.options))
    collectors = {}
    for node in graph:
        if not graph.children(node.name):
            collectors[node.name] = harness.add(
                f"{node.name} (collected)", Collector(), [node.name]
            )
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
    graph: NanoStreamGraph, inputs: Mapping[str, Iterable[Any]] | None = None
) -> dict[str, list[Any]]:
    """:func:`collect` for tests that are not already inside trio."""
    return trio.run(collect, graph, inputs)


def _refuse_none(items: list[Any], name: str = "items") -> None:
    """None is never an item: a process_item that returns it sends nothing,
    so a test that feeds it in would test nothing."""
    for index, item in enumerate(items):
        if item is None:
            raise ValueError(
                f"{name}[{index}] is None, and None is never an item "
                "(a node returns None to send nothing)"
            )
