"""Checkpoints: saving every node's state together with where the sources stand.

A pipeline with a ``state_dir`` takes a checkpoint every
``checkpoint_interval`` seconds, by draining rather than by barriers: it
pauses its sources between two batches, waits until no item is in flight
anywhere (every source batch's ticket is complete), then, in one step with
nothing else running, takes every node's changed keys and ``snapshot()``
(a source's position, a window's watermark) and lets the sources go on. The
snapshot is written to the store (``_store``) in one transaction, and only
then are the acknowledgements of the batches it covers run: a Kafka offset
is committed, a file deleted, only once the state that counted it is saved.

After a crash the next run loads the last checkpoint: each node's state,
and each snapshot given back to ``restore()`` before ``setup``, so that the
sources start again exactly after what the saved state has seen. Nothing is
counted twice and nothing is missing from the state. Results sent on since
that checkpoint are sent again (at-least-once delivery to sinks).

A node that keeps items back (``holding``) delays the drain until it lets
them go; a checkpoint that cannot drain within ``checkpoint_timeout`` is
skipped with a warning, and the next one tries again. Aligned barriers
(Flink's) would not wait for the drain, but they need every node to take
part; for medium data a drain of a few milliseconds every few seconds is
the simpler trade.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from .._graph import NanoStreamGraph
from .._processor import NanoStreamProcessor
from .._state import KeyedState
from ._acks import Ticket, run_acks
from ._errors import NodeError
from ._stats import NodeStats
from ._store import STORE_FILE, Changes, StateStore

logger = logging.getLogger("nanostream")

#: How long a checkpoint waits for the items in flight to drain before it is skipped.
CHECKPOINT_TIMEOUT = 10.0


class CheckpointError(NodeError):
    """The state store failed: the ``state_dir`` could not be opened or
    read, or a checkpoint could not be saved. The run stops; nothing the
    failed checkpoint covers has been acknowledged, so a restart repeats
    it from the last checkpoint saved."""

    def __init__(self, pipeline: str, doing: str, error: BaseException) -> None:
        super().__init__(pipeline, doing, error)
        self.args = (f"pipeline {pipeline!r}: {doing}: {type(error).__name__}: {error}",)


class Checkpoints:
    """The checkpoints of one run of ``graph``: the ledger of tickets in
    flight, the sources' pause, and the store. Each node's state is added
    with :meth:`keep` before the run opens the store."""

    def __init__(self, graph: NanoStreamGraph, stats: Mapping[str, NodeStats]) -> None:
        assert graph.state_dir is not None
        self.pipeline = graph.name
        self.state_dir = graph.state_dir
        self.interval = graph.checkpoint_interval
        self.timeout = CHECKPOINT_TIMEOUT
        self.stats = stats
        self.states: dict[str, KeyedState] = {}
        self.processors: dict[str, NanoStreamProcessor] = {}
        #: What each processing node's state depends on (see :func:`node_config`).
        #: A source's snapshot is a position, which its settings do not change
        #: the meaning of; a processor's state may not fit it once changed.
        self.configs = {
            node.name: node_config(node.processor, node.options.key)
            for node in graph
            if not node.is_source
        }
        #: The sources that save no position (no ``snapshot``).
        self.sources_without_position = [
            (node.name, type(node.processor).__name__)
            for node in graph
            if node.is_source and not callable(getattr(node.processor, "snapshot", None))
        ]
        #: How many checkpoints this run has saved.
        self.saved = 0
        #: Set once the last checkpoint, taken when every node but the
        #: sources has finished, is saved and acknowledged.
        self.final = trio.Event()
        self._store: StateStore | None = None
        self._snapshots: dict[str, Any] = {}
        self._in_flight = 0
        self._drained: trio.Event | None = None
        self._resume: trio.Event | None = None
        self._covered: list[Ticket] = []

    def keep(self, name: str, state: KeyedState, processor: NanoStreamProcessor) -> None:
        """Save ``state`` and ``processor``'s snapshot as node ``name``'s."""
        self.states[name] = state
        self.processors[name] = processor

    @property
    def path(self) -> str:
        """The store's file."""
        return os.path.join(self.state_dir, STORE_FILE)

    # ---------------------------------------------------------------- restoring

    async def open(self) -> None:
        """Open the store and load the last checkpoint into every node's state.

        Raises :class:`CheckpointError` if the ``state_dir`` cannot be
        made, opened or read.
        """
        for name, kind in self.sources_without_position:
            logger.warning(
                "pipeline %r: source %r (%s) saves no position at checkpoints: after a "
                "crash, what it sent since the last checkpoint is missing from the state "
                "unless it sends it again, and what it sends again is counted again",
                self.pipeline,
                name,
                kind,
                extra={"pipeline": self.pipeline, "node": name, "event": "not_replayable"},
            )
        try:
            self._store = await trio.to_thread.run_sync(StateStore, self.state_dir)
            restored = await trio.to_thread.run_sync(self._load)
        except (
            OSError,
            RuntimeError,
            ValueError,
            sqlite3.Error,
            pickle.UnpicklingError,
            EOFError,
        ) as error:
            raise CheckpointError(
                self.pipeline, f"cannot use state_dir {self.state_dir!r}", error
            ) from error
        for state in self.states.values():
            state.durable = True
        if restored:
            logger.info(
                "pipeline %r: state restored from %s (%d checkpoints)",
                self.pipeline,
                self.path,
                restored,
                extra={"pipeline": self.pipeline, "event": "state_restored"},
            )

    def _load(self) -> int:
        store = self._store
        assert store is not None
        count = store.checkpoints()
        self._check_configs(store)
        for name, state in self.states.items():
            state.load(store.state(name))
            found, snapshot = store.snapshot(name)
            if found:
                self._snapshots[name] = snapshot
        return count

    def _check_configs(self, store: StateStore) -> None:
        """Refuse saved state that a node changed since may not fit (a
        window's size, its aggregations); warn of state no node takes up.

        Raises ``ValueError`` naming the node and what changed.
        """
        saved = store.configs()
        with_state = store.nodes_with_state()
        for name in sorted(with_state):
            if name not in self.states:
                logger.warning(
                    "pipeline %r: %s holds state of node %r, which this pipeline does not "
                    "have (renamed or removed?): it is left unused",
                    self.pipeline,
                    self.path,
                    name,
                    extra={"pipeline": self.pipeline, "node": name, "event": "state_unused"},
                )
            elif name in saved and name in self.configs and saved[name] != self.configs[name]:
                changed = _differences(json.loads(saved[name]), json.loads(self.configs[name]))
                raise ValueError(
                    f"node {name!r} has changed since its state was saved ({changed}), and "
                    f"that state may not fit it: put the old setting back, or delete "
                    f"{self.path} to start over"
                )

    def restored_snapshot(self, node: str) -> tuple[bool, Any]:
        """Whether the last checkpoint holds a snapshot of ``node``, and what it is."""
        if node in self._snapshots:
            return True, self._snapshots.pop(node)
        return False, None

    async def close(self) -> None:
        if self._store is not None:
            await trio.to_thread.run_sync(self._store.close)
            self._store = None

    # ---------------------------------------------------------------- the ledger

    def ticket(self, source: str, acks: list) -> Ticket:
        """A ticket for a batch a source sends, counted in flight until complete."""
        self._in_flight += 1
        return Ticket(source, acks, self)

    def complete(self, ticket: Ticket) -> None:
        """Everything derived from ``ticket``'s batch is handled: its
        acknowledgements wait for the next checkpoint to be saved."""
        self._covered.append(ticket)
        self._done_one()

    @contextmanager
    def emitting(self) -> Iterator[None]:
        """Counts a source's batch in flight from the moment its generator
        yields it until its tickets exist, across any wait in between, so
        that no checkpoint falls between the source's position moving on
        and the batch being counted."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._done_one()

    def _done_one(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def gate(self) -> None:
        """Where a source waits, between two batches, while a checkpoint drains."""
        if self._resume is not None:
            await self._resume.wait()

    # ---------------------------------------------------------------- taking them

    async def run(
        self, everything_but_sources_done: trio.Event, fail: Callable[[NodeError], None]
    ) -> None:
        """Take a checkpoint every ``interval`` seconds, and a last one once
        every node but the sources has finished; a failure is handed to ``fail``."""
        try:
            while not everything_but_sources_done.is_set():
                with trio.move_on_after(self.interval):
                    await everything_but_sources_done.wait()
                if not everything_but_sources_done.is_set():
                    await self.take()
            await self.take()
        except NodeError as error:
            fail(error)
            return
        self.final.set()

    async def take(self) -> bool:
        """Drain, snapshot and save one checkpoint, then run the
        acknowledgements it covers. Returns whether it was saved; one
        that could not drain in time is skipped, with a warning.

        Raises :class:`NodeError` naming the node if a snapshot fails, and
        :class:`CheckpointError` if the store does.
        """
        resume = self._resume = trio.Event()
        try:
            with trio.move_on_after(self.timeout) as waited:
                while self._in_flight:
                    self._drained = trio.Event()
                    await self._drained.wait()
            self._drained = None
            if waited.cancelled_caught:
                logger.warning(
                    "pipeline %r: checkpoint skipped: %d batches still in flight after %ss "
                    "(a node holding items back, or a backlog slower to work through: "
                    "lower buffer_size before the slow node); the next one tries again",
                    self.pipeline,
                    self._in_flight,
                    self.timeout,
                    extra={"pipeline": self.pipeline, "event": "checkpoint_skipped"},
                )
                return False
            # From here to the end of _changes nothing else runs: this is the checkpoint.
            changes = self._changes()
            covered, self._covered = self._covered, []
        finally:
            self._resume = None
            resume.set()
        store = self._store
        assert store is not None
        try:
            with trio.CancelScope(shield=True):  # a write once begun is finished
                await trio.to_thread.run_sync(store.save, changes)
        except Exception as error:
            raise CheckpointError(self.pipeline, "could not save a checkpoint", error) from error
        self.saved += 1
        for ticket in covered:
            run_acks(ticket, self.stats)
        return True

    def _changes(self) -> Changes:
        changes = Changes()
        changes.configs = list(self.configs.items())
        for name, state in self.states.items():
            state.expire()
            written, deleted = state.changes()
            if written or deleted:
                try:
                    changes.add_state(name, written, deleted)
                except Exception as error:
                    raise NodeError(name, "saving its state", error) from error
            state.mark_saved()
            snapshot = getattr(self.processors[name], "snapshot", None)
            if callable(snapshot):
                try:
                    changes.add_snapshot(name, snapshot())
                except Exception as error:
                    raise NodeError(name, "snapshot", error) from error
        return changes


def node_config(processor: NanoStreamProcessor, key: str | None) -> str:
    """What a node's saved state depends on, as JSON: its class, the
    parameters it was made with, and its key."""
    parameters = {}
    if attrs.has(type(processor)):
        parameters = {
            field.name: getattr(processor, field.name)
            for field in attrs.fields(type(processor))
            if field.init
        }
    kind = type(processor)
    config = {"class": f"{kind.__module__}:{kind.__qualname__}", "key": key, **parameters}
    return json.dumps(config, sort_keys=True, default=repr)


def _differences(saved: dict, now: dict) -> str:
    """``size: 60.0 -> 300.0, aggregate``: what differs, briefly."""
    parts = []
    for name in sorted(set(saved) | set(now)):
        before, after = saved.get(name), now.get(name)
        if before != after:
            short = len(repr(before)) + len(repr(after)) < 60
            parts.append(f"{name}: {before!r} -> {after!r}" if short else name)
    return ", ".join(parts)
