"""``nanostream run --watch``: run a pipeline and swap in each good edit of it.

The pipeline file and the Python modules in its folder are watched with
watchfiles (its ``awatch`` runs under trio through anyio). On a change the
new version is loaded and checked first, the running pipeline untouched:

* if it has errors, they are printed, every one with its ``file:line:col``,
  and the running version goes on;
* if it is good, the running pipeline is drained, as on SIGINT: its sources
  stop, what is in flight reaches the sinks and is acknowledged, every
  teardown runs; then the new version starts. Sources that acknowledge
  (a Kafka consumer group, a folder watched with ``existing`` and
  ``when_done``) resume in the new version from what the old one
  acknowledged, so nothing is lost; as after any restart, work that was
  not acknowledged may be done again.

A pipeline that ends or fails is reported, and the next good edit starts
it again. SIGINT or SIGTERM drains the running version and ends; a second
signal cancels it at once.

Each version is watched as ``nanostream run`` watches a pipeline (see
:class:`Observers`): one metrics server serves whichever version runs, and
each version gets its own live table, or its summary when it ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs
import trio
import watchfiles

from ._graph import NanoStreamGraph
from ._imports import forget_modules
from ._runtime import GraphRun, NodeError, run_graph
from .config import ConfigErrors, load_pipeline
from .config._loader import secrets_of
from .observe import RunHolder, serve_observed, show_live, summary_text

if TYPE_CHECKING:
    from rich.console import Console

Report = Callable[[str], None]


def _to_stderr(message: str) -> None:
    print(f"nanostream: {message}", file=sys.stderr, flush=True)


def watched(config: str | os.PathLike[str]) -> Callable[[watchfiles.Change, str], bool]:
    """The watchfiles filter of what a change to reloads: the pipeline file
    itself and the Python files in its folder and below (caches, hidden
    folders and virtual environments left out)."""
    config_path = os.path.realpath(config)
    folder = os.path.dirname(config_path)

    def accept(change: watchfiles.Change, path: str) -> bool:
        real = os.path.realpath(path)
        if real == config_path:
            return True
        parts = Path(os.path.relpath(real, folder)).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            return False
        return path.endswith(".py")

    return accept


@attrs.define
class Observers:
    """How each version is watched while it runs, as ``nanostream run`` does.

    With ``metrics_port``, one server serves Prometheus metrics, ``/healthz``
    and ``/readyz`` for whichever version runs (not ready while one is
    swapped for the next). ``console`` draws a live table of each version;
    without one, ``summaries`` prints what each version did when it ends.
    ``log_handler`` is kept from showing the values each version's file
    took from the environment, as ``nanostream run`` keeps its own.
    """

    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    console: Console | None = None
    summaries: bool = False
    log_handler: logging.Handler | None = None
    #: What the metrics server reads, filled anew with each version.
    served: RunHolder | None = attrs.field(default=None, init=False)

    def holder_for(self, graph: NanoStreamGraph) -> RunHolder:
        """The holder of a new version of the pipeline, ``graph``."""
        if self.served is None:
            return RunHolder(graph)
        self.served.restart(graph)
        return self.served

    async def serve_metrics(self, graph: NanoStreamGraph, nursery: trio.Nursery) -> str | None:
        """Start the metrics server, if asked for, in ``nursery``; return its
        URL, or raise ``OSError`` if it cannot listen."""
        if self.metrics_port is None:
            return None
        self.served = RunHolder(graph)
        port = await nursery.start(
            partial(serve_observed, self.served, self.metrics_port, host=self.metrics_host)
        )
        host = f"[{self.metrics_host}]" if ":" in self.metrics_host else self.metrics_host
        return f"http://{host}:{port}/metrics"


@attrs.define(eq=False)
class _Version:
    """One version of the pipeline while it runs: started once, drained once."""

    graph: NanoStreamGraph
    run: GraphRun | None = None
    failures: list[NodeError] = attrs.field(factory=list)
    running: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)

    async def serve(
        self, drain_timeout: float | None, report: Report, observers: Observers
    ) -> None:
        holder = observers.holder_for(self.graph)
        secrets = secrets_of(self.graph)
        if observers.log_handler is not None:
            observers.log_handler.addFilter(secrets)
        try:
            async with trio.open_nursery() as nursery:

                async def run_then_stop_watching(task_status: trio.TaskStatus) -> None:
                    try:
                        await run_graph(
                            self.graph, drain_timeout=drain_timeout, task_status=task_status
                        )
                    finally:
                        holder.finished(trio.current_time())
                        nursery.cancel_scope.cancel()

                self.run = await nursery.start(run_then_stop_watching)
                holder.started(self.run, trio.current_time())
                self.running.set()
                if observers.console is not None:
                    nursery.start_soon(
                        partial(show_live, holder, observers.console, redirect_stderr=True)
                    )
        except* NodeError as group:
            self.failures = [error for error in group.exceptions if isinstance(error, NodeError)]
            for failure in self.failures:
                report(secrets.hide(str(failure), everywhere=False))
            report("the pipeline failed; waiting for a change to the files")
        else:
            if self.run is not None and not self.run.stopping:
                report("the pipeline finished; waiting for a change to the files")
        finally:
            if observers.summaries and (self.run is not None or self.failures):
                print(summary_text(holder), file=sys.stderr, flush=True)
            if observers.log_handler is not None:
                observers.log_handler.removeFilter(secrets)
            self.done.set()

    async def drain(self) -> None:
        """Stop the sources, let what is in flight finish, and wait for the end."""
        with trio.CancelScope(shield=True):
            await _first(self.running.wait, self.done.wait)
            if self.run is not None:
                self.run.stop()
            await self.done.wait()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    @property
    def cut_short(self) -> bool:
        return bool(self.failures) or (self.run is not None and not self.run.drained)


async def _first(*waits: Callable[[], object]) -> None:
    """Return as soon as one of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def until(wait=wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until)


def _load(config: str, report: Report, version: str = "the new version") -> NanoStreamGraph | None:
    """The pipeline at ``config`` as its files are now, or None after
    printing every error in it."""
    forget_modules(os.path.dirname(os.path.abspath(config)))
    try:
        return load_pipeline(config)
    except ConfigErrors as error:
        for each in error.errors:
            print(each.format(), file=sys.stderr)
        count = len(error.errors)
        report(f"{count} error{'s' if count != 1 else ''} in {version}")
        return None


async def run_watching(
    config: str,
    *,
    drain_timeout: float | None = 30.0,
    report: Report = _to_stderr,
    observers: Observers | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run the pipeline at ``config``, swapping in each good edit, until
    SIGINT or SIGTERM; returns the exit status.

    The status is 0 when the last version ended by a drain that finished
    in time, 1 when it failed or was cut short, or when the file had errors
    at the start. ``task_status.started()`` is called once the first
    version runs and the files are watched. ``report`` receives one line
    per event (a change seen, a swap, a failure).

    Cancellation: cancelling it cancels the running version (its teardowns
    still run) and stops watching.
    """
    graph = _load(config, report, config)
    if graph is None:
        return 1
    observers = observers or Observers()
    folder = os.path.dirname(os.path.abspath(config))
    changes_in, changes = trio.open_memory_channel[set[tuple[watchfiles.Change, str]]](16)
    stop_watching = anyio.Event()
    version = _Version(graph)

    async def watch_files(task_status: trio.TaskStatus[None]) -> None:
        async with changes_in:
            # A change is reported once 50 ms pass without another (1.6 s at
            # most); every 100 ms without one yields an empty set, the first
            # of which says the watcher is in place.
            watcher = watchfiles.awatch(
                folder,
                watch_filter=watched(config),
                stop_event=stop_watching,
                yield_on_timeout=True,
                rust_timeout=100,
            )
            started = False
            async for batch in watcher:
                if not started:
                    task_status.started()
                    started = True
                if batch:
                    await changes_in.send(batch)
            if not started:  # stopped by a signal before it was in place
                task_status.started()

    async def on_signals(task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    report(f"second {name}: stopping at once")
                    version.cancel()
                    continue
                stopping = True
                report(f"{name}: draining")
                stop_watching.set()

    async with trio.open_nursery() as nursery:
        try:
            url = await observers.serve_metrics(graph, nursery)
        except OSError as error:
            report(f"cannot serve metrics on port {observers.metrics_port}: {error}")
            nursery.cancel_scope.cancel()
            return 1
        if url is not None:
            report(f"serving metrics on {url}")
        if threading.current_thread() is threading.main_thread():
            await nursery.start(on_signals)
        nursery.start_soon(version.serve, drain_timeout, report, observers)
        await _first(version.running.wait, version.done.wait)
        if version.running.is_set():
            report(f"running pipeline {graph.name!r}")
        await nursery.start(watch_files)
        report(f"watching {config} and the modules beside it for changes")
        task_status.started()
        try:
            async for batch in changes:
                if stop_watching.is_set():
                    break  # a signal came: no new version
                names = sorted({os.path.relpath(path, folder) for _, path in batch})
                report(f"changed: {', '.join(names)}")
                new = _load(config, report)
                if new is None:
                    if not version.done.is_set():
                        report("still running the previous version")
                    continue
                await version.drain()
                if stop_watching.is_set():
                    break
                version = _Version(new)
                nursery.start_soon(version.serve, drain_timeout, report, observers)
                await _first(version.running.wait, version.done.wait)
                if version.running.is_set():
                    report(f"reloaded: pipeline {new.name!r} runs the new version")
        finally:
            stop_watching.set()
            await version.drain()
            nursery.cancel_scope.cancel()
    return 1 if version.cut_short else 0
