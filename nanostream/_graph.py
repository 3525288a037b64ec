"""A pipeline's shape: named nodes and the edges between them."""

from __future__ import annotations

import difflib
import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ._durations import duration
from ._options import NodeOptions
from ._processor import (
    NanoStreamProcessor,
    _defines,
    call_style,
    is_source,
    parent_parameters,
)
from ._state import key_function


class GraphError(ValueError):
    """A graph that cannot run: every problem found, each naming its node."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@attrs.frozen
class GraphProblem:
    """One thing wrong with a graph, and the node (and key) it concerns."""

    node: str
    message: str
    key: str | None = None

    def __str__(self) -> str:
        return f"node {self.node!r}: {self.message}"


@attrs.frozen
class Node:
    """One node of a graph: its name, what it runs, where its items come from."""

    name: str
    processor: NanoStreamProcessor
    parents: tuple[str, ...]
    options: NodeOptions

    @property
    def is_source(self) -> bool:
        return is_source(self.processor)


class NanoStreamGraph:
    """A directed acyclic graph of named nodes: a pipeline.

    Build it with :meth:`add`, in any order; :func:`run_graph` checks it as a
    whole before anything runs (unknown parents, cycles, sources given
    parents, processors left without any) and reports every problem at once.

    With a ``state_dir``, the nodes' keyed state and the sources' positions
    are saved there every ``checkpoint_interval`` (seconds, or a duration
    such as ``"30s"``) and restored by the next run (see docs/state.md).
    Raises ``ValueError`` for a ``checkpoint_interval`` that is not a
    duration of more than 0.
    """

    def __init__(
        self,
        name: str = "pipeline",
        *,
        log_items: bool = True,
        state_dir: str | os.PathLike[str] | None = None,
        checkpoint_interval: float | str = 10.0,
    ) -> None:
        self.name = name
        #: Whether error messages and logs show the item that failed; off
        #: for items that must not reach the logs (personal or secret data).
        self.log_items = log_items
        #: Where the nodes' state and the sources' positions are saved at
        #: each checkpoint, to be restored on the next run; ``None`` keeps
        #: state in memory only.
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        #: Seconds between two checkpoints (with a ``state_dir``): a number, or
        #: a duration such as ``"30s"`` (see :func:`duration`).
        self.checkpoint_interval = duration(checkpoint_interval)
        if self.checkpoint_interval <= 0:
            raise ValueError(
                f"checkpoint_interval must be more than 0, not {checkpoint_interval!r}"
            )
        self._nodes: dict[str, Node] = {}

    def add(
        self,
        name: str,
        processor: NanoStreamProcessor,
        parents: Iterable[str] = (),
        **options: Any,
    ) -> NanoStreamProcessor:
        """Add ``processor`` as the node ``name``, fed by ``parents``.

        ``options`` are the runtime keys of :class:`NodeOptions`
        (``on_error``, ``retries``, ``dead_letter``, ``buffer_size``, ...).
        Returns the processor, so a graph can be built inline.
        """
        if name in self._nodes:
            raise GraphError([GraphProblem(name, "a node with this name already exists")])
        if not isinstance(processor, NanoStreamProcessor):
            raise GraphError(
                [GraphProblem(name, f"{processor!r} is not a NanoStreamProcessor instance")]
            )
        if isinstance(parents, str):
            parents = [parents]
        unknown = sorted(set(options) - {field.name for field in attrs.fields(NodeOptions)})
        if unknown:
            raise GraphError([GraphProblem(name, _unknown_option_message(key)) for key in unknown])
        try:
            node_options = NodeOptions(**options)
        except (TypeError, ValueError) as error:
            raise GraphError([GraphProblem(name, str(error))]) from error
        self._nodes[name] = Node(name, processor, tuple(parents), node_options)
        return processor

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by name, in the order they were added."""
        return self._nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def children(self, name: str) -> list[str]:
        """The nodes that ``name`` sends its results to (not its dead letters)."""
        return [node.name for node in self if name in node.parents]

    def inputs(self, name: str) -> list[str]:
        """Every node that sends to ``name``: its parents, then nodes whose
        dead letters it takes."""
        senders = list(self._nodes[name].parents)
        senders += [node.name for node in self if node.options.dead_letter == name]
        return senders

    def problems(self) -> list[GraphProblem]:
        """Everything that stops this graph from running, in node order."""
        found: list[GraphProblem] = []
        for node in self:
            for parent in node.parents:
                if parent not in self._nodes:
                    found.append(
                        GraphProblem(node.name, self._unknown_message("parent", parent), "parents")
                    )
            target = node.options.dead_letter
            if target is not None and target not in self._nodes:
                found.append(
                    GraphProblem(
                        node.name, self._unknown_message("dead_letter node", target), "dead_letter"
                    )
                )
            elif target is not None and parent_parameters(self._nodes[target].processor):
                kind = type(self._nodes[target].processor).__name__
                found.append(
                    GraphProblem(
                        node.name,
                        f"dead_letter: {target!r} is a {kind}, which receives items from the "
                        "parents it names only",
                        "dead_letter",
                    )
                )
            if node.is_source and node.parents:
                found.append(
                    GraphProblem(
                        node.name,
                        f"{type(node.processor).__name__} is a source and takes no parents",
                        "parents",
                    )
                )
            if node.options.workers > 1 and (node.is_source or holds_items(node.processor)):
                what = "a source" if node.is_source else "a node that holds items back"
                found.append(
                    GraphProblem(
                        node.name,
                        f"{type(node.processor).__name__} is {what} and runs as one worker",
                        "workers",
                    )
                )
            found += _executor_problems(node)
            found += _key_problems(node)
            found += _parent_parameter_problems(node)
            if not node.is_source and not self.inputs(node.name):
                found.append(
                    GraphProblem(
                        node.name,
                        f"{type(node.processor).__name__} processes items but has no "
                        "parents to receive them from",
                    )
                )
        if not any(node.is_source for node in self):
            found.append(GraphProblem(self.name, "the pipeline has no source node"))
        cycle = self._find_cycle()
        if cycle:
            found.append(
                GraphProblem(cycle[0], "the graph has a cycle: " + " -> ".join(cycle), "parents")
            )
        return found

    def validate(self) -> None:
        """Raise :class:`GraphError` listing every problem, if there is any."""
        found = self.problems()
        if found:
            raise GraphError(found)

    def topological_order(self) -> list[str]:
        """Node names with every node after all of its inputs."""
        order: list[str] = []
        placed: set[str] = set()

        def place(name: str) -> None:
            if name in placed:
                return
            placed.add(name)
            for sender in self.inputs(name):
                if sender in self._nodes:
                    place(sender)
            order.append(name)

        for name in self._nodes:
            place(name)
        return order

    def _find_cycle(self) -> list[str]:
        """A cycle as a list of names that starts and ends on the same node,
        or an empty list."""
        state: dict[str, str] = {}
        path: list[str] = []

        def visit(name: str) -> list[str]:
            state[name] = "open"
            path.append(name)
            for sender in self.inputs(name):
                if sender not in self._nodes:
                    continue
                if state.get(sender) == "open":
                    cycle = [*path[path.index(sender) :], sender]
                    return list(reversed(cycle))
                if sender not in state:
                    found = visit(sender)
                    if found:
                        return found
            state[name] = "closed"
            path.pop()
            return []

        for name in self._nodes:
            if name not in state:
                found = visit(name)
                if found:
                    return found
        return []

    def _unknown_message(self, what: str, name: str) -> str:
        return f"unknown {what} {name!r}" + did_you_mean(name, self._nodes)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_option_message(key: str) -> str:
    names = [field.name for field in attrs.fields(NodeOptions)]
    return f"unknown option {key!r}" + did_you_mean(key, names)


def holds_items(processor: NanoStreamProcessor) -> bool:
    """Whether ``processor`` keeps items back to send later (``holding``, ``deadline``)."""
    return any(callable(getattr(processor, hook, None)) for hook in ("holding", "deadline"))


def _executor_problems(node: Node) -> list[GraphProblem]:
    """What stops ``node`` from running on its executor."""
    executor = node.options.executor
    if executor == "loop":
        return []
    kind = type(node.processor).__name__
    if node.is_source:
        return [GraphProblem(node.name, f"{kind} is a source and runs on the loop", "executor")]
    handler = "process_batch" if _defines(node.processor, "process_batch") else "process_item"
    function = getattr(node.processor, handler, None)
    if function is not None and call_style(function) in ("async", "async generator"):
        return [
            GraphProblem(
                node.name,
                f"{kind}.{handler} is async and runs on the loop; executor {executor!r} "
                "runs plain functions (async code waits without blocking: use workers)",
                "executor",
            )
        ]
    if executor == "process":
        if holds_items(node.processor):
            return [
                GraphProblem(
                    node.name,
                    f"{kind} holds items back, which worker processes cannot share; "
                    "use executor 'thread'",
                    "executor",
                )
            ]
        reason = unpicklable(node.processor)
        if reason is not None:
            return [GraphProblem(node.name, reason, "executor")]
    return []


def unpicklable(processor: NanoStreamProcessor) -> str | None:
    """Why ``processor`` cannot be sent to a worker process (naming the
    attribute that cannot be pickled when one can be found), or ``None``."""
    try:
        pickle.dumps(processor)
    except Exception as error:
        kind = type(processor)
        names = [f.name for f in attrs.fields(kind)] if attrs.has(kind) else vars(processor)
        for attribute in names:
            try:
                pickle.dumps(getattr(processor, attribute))
            except Exception as cause:
                return (
                    f"attribute {attribute!r} of {type(processor).__name__} cannot be "
                    f"pickled for executor 'process': {cause}"
                )
        return f"{type(processor).__name__} cannot be pickled for executor 'process': {error}"
    return None


def _parent_parameter_problems(node: Node) -> list[GraphProblem]:
    """What is wrong with the parents of a node that names them in its
    parameters (see :func:`parent_parameters`): a parameter naming a node
    that is not a parent, two naming the same, or parents left unnamed."""
    named = parent_parameters(node.processor)
    if not named:
        return []
    kind = type(node.processor).__name__
    parents = node.parents
    found = []
    for parameter, parent in named.items():
        if parent not in parents:
            listed = ", ".join(map(repr, parents)) or "none"
            found.append(
                GraphProblem(
                    node.name,
                    f"{parameter}: {parent!r} is not one of the node's parents ({listed})"
                    + did_you_mean(str(parent), parents),
                    parameter,
                )
            )
    values = list(named.values())
    for parent in dict.fromkeys(values):
        if values.count(parent) > 1 and parent in parents:
            same = [name for name, value in named.items() if value == parent]
            found.append(
                GraphProblem(
                    node.name,
                    f"{' and '.join(same)} name the same parent {parent!r}: a {kind} "
                    "needs a different parent for each",
                    same[-1],
                )
            )
    if len(parents) != len(named):
        found.append(
            GraphProblem(
                node.name,
                f"{kind} takes exactly {len(named)} parents, the ones its "
                f"{' and '.join(map(repr, named))} name, not {len(parents)}",
                "parents",
            )
        )
    return found


def _key_problems(node: Node) -> list[GraphProblem]:
    """A ``key`` where keyed state cannot work: on a source (it has no
    incoming items to key), or in worker processes (state lives in the
    pipeline's process); or none, for a node that ``needs_key``."""
    key = node.options.key
    kind = type(node.processor).__name__
    if key is None:
        if getattr(node.processor, "needs_key", False):
            return [
                GraphProblem(
                    node.name,
                    f"{kind} keeps state by key: give it a key (a field of the items, or "
                    "a function by import path 'module:function')",
                    "class",
                )
            ]
        return []
    if node.is_source:
        return [
            GraphProblem(
                node.name, f"{kind} is a source: a key is for nodes that receive items", "key"
            )
        ]
    if node.options.executor == "process":
        return [
            GraphProblem(
                node.name,
                "a node with a key keeps its state in the pipeline's process: use "
                "executor 'loop' or 'thread'",
                "executor",
            )
        ]
    from ._imports import ImportPathError  # _imports needs this module

    try:
        key_function(key)
    except (ImportPathError, TypeError) as error:
        return [GraphProblem(node.name, str(error), "key")]
    return []
