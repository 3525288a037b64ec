"""Call-style adapters: one node's code, of whichever style, as a handler of pieces.

A node defines ``process_item`` or ``process_batch``, each plain, async, a
generator or an async generator. The adapters here turn that into one
coroutine function, ``handle(piece, counter) -> results``, so the workers
need not know the style. On the ``loop`` executor the code runs on the trio
thread; on ``thread`` and ``process`` a plain function runs elsewhere
through :func:`apply_batch`, and the results come back to the loop.
Either way the node's error policy applies to what failed, and items are
counted as they are done (off the loop, as each piece comes back).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing, closing
from functools import partial
from typing import Any, NamedTuple

import trio

from .._processor import FailedItems, NanoStreamProcessor, call_style
from ._acks import Tickets
from ._batches import Piece
from ._errors import NodeError, WorkerProcessDied, node_error
from ._outbox import Outbox
from ._policy import ErrorPolicy
from ._stats import WorkerCounter

logger = logging.getLogger("nanostream")

#: A sync call on the loop longer than this (seconds) is logged, once per node.
LOOP_HOLD_WARNING = 0.1

Handler = Callable[[Piece, WorkerCounter], Awaitable[list]]


class Outcome(NamedTuple):
    """What a plain batch call run off the loop produced: the results, the
    items that failed by index (``FailedItems`` style), or the exception of
    the whole batch."""

    results: list
    failed: dict[int, Exception]
    error: Exception | None


def apply_batch(processor: NanoStreamProcessor, items: list) -> Outcome:
    """Run a node's plain ``process_batch`` or ``process_item`` (or plain
    generator) on ``items``; never raises for the node's own exceptions."""
    process_batch = getattr(processor, "process_batch", None)
    if callable(process_batch):
        try:
            produced = process_batch(items)
            results = [] if produced is None else [r for r in produced if r is not None]
        except FailedItems as failed:
            return Outcome([r for r in failed.results if r is not None], failed.errors, None)
        except Exception as error:
            return Outcome([], {}, error)
        return Outcome(results, {}, None)
    process_item = processor.process_item
    generator = inspect.isgeneratorfunction(process_item)
    results: list = []
    failed: dict[int, Exception] = {}
    append = results.append
    for index, item in enumerate(items):
        try:
            if generator:
                results += [r for r in process_item(item) if r is not None]
            else:
                result = process_item(item)
                if result is not None:
                    append(result)
        except Exception as error:
            failed[index] = error
    return Outcome(results, failed, None)


def during_of(processor: NanoStreamProcessor) -> str:
    """The name of the method that handles a node's items."""
    return (
        "process_batch" if callable(getattr(processor, "process_batch", None)) else "process_item"
    )


class LoopHoldWatch:
    """Logs, once per node, a sync call that held the event loop too long:
    every other node waited meanwhile."""

    def __init__(self, pipeline: str, node: str) -> None:
        self.pipeline = pipeline
        self.node = node
        self.logged = False

    def check(self, during: str, started: float, count: int) -> None:
        """Log if the call that began at ``started`` (a :func:`time.perf_counter`
        reading) held the loop too long."""
        self.check_held(during, time.perf_counter() - started, count)

    def check_held(self, during: str, held: float, count: int) -> None:
        """Log if ``held`` seconds of the node's code on ``count`` items held the loop too long."""
        if held > LOOP_HOLD_WARNING and not self.logged:
            self.logged = True
            logger.warning(
                "node %r: %s held the event loop for %.2fs (%d items), and every other "
                "node waited; use executor: thread (blocking code) or process (CPU-bound "
                "code), or a smaller max_batch",
                self.node,
                during,
                held,
                count,
                extra={
                    "pipeline": self.pipeline,
                    "node": self.node,
                    "event": "loop_held",
                    "seconds": round(held, 3),
                },
            )


class LoopStyles:
    """Builds the handler that runs a node's code on the trio thread."""

    def __init__(
        self,
        name: str,
        processor: NanoStreamProcessor,
        policy: ErrorPolicy,
        outbox: Outbox,
        chunk: float,
        hold_watch: LoopHoldWatch,
    ) -> None:
        self.name = name
        self.processor = processor
        self.policy = policy
        self.outbox = outbox
        self.chunk = chunk
        self.hold_watch = hold_watch

    async def results_of(
        self,
        function: Callable[..., Any],
        during: str,
        piece: Piece | None,
        *args: Any,
        style: str | None = None,
        in_lists: bool = False,
        counter: WorkerCounter | None = None,
    ) -> list:
        """Call a user function of any call style; collect what it sends on.

        What a generator yields is sent on in chunks of ``max_batch`` while
        it runs (as parts of ``piece``), so a node may yield far more than
        it could hold; only the last chunk is returned, and the time the
        chunks took to hand on is noted on ``counter``. ``in_lists``: the
        generator yields lists of results (``process_item_batches``), each
        added to the chunk whole.
        """
        try:
            style = style or call_style(function)
            if style in ("async generator", "generator"):
                produced = function(*args)
                if style == "generator":
                    produced = _as_async(produced)
                results: list = []
                async with aclosing(produced):
                    async for result in produced:
                        if in_lists:
                            results += [r for r in result if r is not None]
                        elif result is not None:
                            results.append(result)
                        if len(results) >= self.chunk and piece is not None:
                            await self._send_part(piece, results, counter)
                            results = []
                return results
            result = function(*args)
            if style == "async" or inspect.isawaitable(result):
                result = await result
        except trio.Cancelled:
            raise
        except NodeError:
            raise
        except Exception as error:
            raise NodeError(self.name, during, error) from error
        if during == "process_batch":
            return [] if result is None else [r for r in result if r is not None]
        return [] if result is None else [result]

    async def _send_part(self, piece: Piece, results: list, counter: WorkerCounter | None) -> None:
        """Send part of ``piece``'s results on, and note on ``counter`` the
        time that took, which is not the node's own."""
        began = time.perf_counter()
        await self.outbox.send_part(piece, results)
        if counter is not None:
            counter.handed_on(began)

    def plain_process_item(self) -> Callable[[Any], Any] | None:
        """The node's ``process_item`` if it is a plain function (not async,
        not a generator) and the node has no ``process_batch`` or
        ``process_item_batches``: the style that a chain may fuse (see
        ``_chaining``)."""
        processor = self.processor
        if callable(getattr(processor, "process_batch", None)) or callable(
            getattr(processor, "process_item_batches", None)
        ):
            return None
        process_item = getattr(processor, "process_item", None)
        if callable(process_item) and call_style(process_item) == "plain":
            return process_item
        return None

    def fused_stage(self) -> tuple[Callable[[Any], Any], str] | None:
        """How a fused chain runs the node (see ``_chaining``), if it can:
        ``(process_item, "map")`` for a plain ``process_item``, or, for a
        node whose ``_fused_test`` gives a plain test that its
        ``process_item`` keeps items by, ``(test, "keep")`` (or ``"drop"``
        when inverted), so that the loop calls the test itself."""
        process_item = self.plain_process_item()
        if process_item is None:
            return None
        fused_test = getattr(self.processor, "_fused_test", None)
        if fused_test is None:
            return process_item, "map"
        test, invert = fused_test
        return test, "drop" if invert else "keep"

    def handler(self) -> Handler:
        processor = self.processor
        plain = self.plain_process_item()
        if plain is not None:
            return self._plain_handler(plain)
        if callable(getattr(processor, "process_batch", None)):
            return self._batch_handler(processor.process_batch)
        in_lists = getattr(processor, "process_item_batches", None)
        if callable(in_lists):
            style = call_style(in_lists)
            if style not in ("generator", "async generator"):
                why = "process_item_batches() must be a generator or an async generator"
                raise NodeError(self.name, "setup", TypeError(why))
            return self._each_handler(in_lists, style, "process_item_batches")
        process_item = getattr(processor, "process_item", None)
        if not callable(process_item):
            raise NodeError(
                self.name,
                "setup",
                TypeError(f"{type(processor).__name__} defines no process_item()"),
            )
        style = call_style(process_item)
        if style == "generator":
            return self._generator_handler(process_item)
        return self._each_handler(process_item, style, "process_item")

    def _batch_handler(self, process_batch: Callable[[list], Any]) -> Handler:
        policy = self.policy
        results_of = self.results_of
        style = call_style(process_batch)
        sync = style in ("plain", "generator")
        check = self.hold_watch.check

        async def attempt_one(item: Any) -> list:
            try:
                return await results_of(process_batch, "process_batch", None, [item])
            except NodeError as again:
                if isinstance(again.error, FailedItems):
                    [error] = again.error.errors.values()
                    raise node_error(self.name, "process_batch", error, item) from error
                raise

        async def handle_batch(piece: Piece, counter: WorkerCounter) -> list:
            items = piece.items
            started = counter.started = time.perf_counter()
            try:
                results = await results_of(
                    process_batch, "process_batch", piece, items, style=style, counter=counter
                )
            except NodeError as failure:
                if isinstance(failure.error, FailedItems):
                    results = await policy.recover_failed_items(
                        items, failure.error, "process_batch", attempt_one, piece.tickets
                    )
                else:
                    results = await policy.recover(
                        items,
                        failure,
                        partial(results_of, process_batch, "process_batch", None, items),
                        piece.tickets,
                    )
            if sync:
                check("process_batch", started + counter.handed_over, len(items))
            counter.done(len(items), started)
            return results

        return handle_batch

    def _plain_handler(self, process_item: Callable[[Any], Any]) -> Handler:
        """A tight loop with no per-item overhead beyond the call itself;
        an error leaves the loop and re-enters it after the failed item."""
        recover = self.recover_item
        check = self.hold_watch.check

        async def handle_plain(piece: Piece, counter: WorkerCounter) -> list:
            items = piece.items
            started = time.perf_counter()
            results: list = []
            append = results.append
            remaining = iter(items)
            while True:
                try:
                    for item in remaining:
                        result = process_item(item)
                        if result is not None:
                            append(result)
                    break
                except Exception as error:
                    results += await recover(process_item, item, error, piece.tickets)
            check("process_item", started, len(items))
            counter.done(len(items), started)
            return results

        return handle_plain

    def _generator_handler(self, process_item: Callable[[Any], Any]) -> Handler:
        """A plain generator ``process_item``, iterated directly with no
        async wrapper per item."""
        chunk = self.chunk
        recover = self.recover_item
        send_part = self._send_part
        check = self.hold_watch.check

        async def handle_generated(piece: Piece, counter: WorkerCounter) -> list:
            items = piece.items
            started = counter.started = time.perf_counter()
            results: list = []
            for item in items:
                kept = len(results)
                try:
                    with closing(process_item(item)) as produced:
                        for result in produced:
                            if result is not None:
                                results.append(result)
                                if len(results) >= chunk:
                                    await send_part(piece, results, counter)
                                    results, kept = [], 0
                except NodeError:
                    raise
                except Exception as error:
                    # What the failed item yielded before it failed goes with it.
                    del results[kept:]
                    results += await recover(process_item, item, error, piece.tickets)
            check("process_item", started + counter.handed_over, len(items))
            counter.done(len(items), started)
            return results

        return handle_generated

    def _each_handler(self, process_item: Callable[[Any], Any], style: str, during: str) -> Handler:
        """An async ``process_item`` (or async generator), or a
        ``process_item_batches``, awaited item by item, each counted as it
        is done."""
        in_lists = during == "process_item_batches"
        results_of = partial(self.results_of, style=style, in_lists=in_lists)
        policy = self.policy
        chunk = self.chunk
        send_part = self.outbox.send_part
        clock = time.perf_counter

        async def handle_each(piece: Piece, counter: WorkerCounter) -> list:
            results: list = []
            for item in piece.items:
                started = counter.started = clock()
                try:
                    results += await results_of(process_item, during, piece, item, counter=counter)
                except NodeError as failure:
                    results += await policy.recover(
                        [item],
                        failure,
                        partial(results_of, process_item, during, None, item),
                        piece.tickets,
                    )
                counter.done(1, started)
                if len(results) >= chunk:
                    await send_part(piece, results)
                    results = []
            return results

        return handle_each

    async def recover_item(
        self, process_item: Callable[[Any], Any], item: Any, error: Exception, tickets: Tickets
    ) -> list:
        """Apply the node's error policy to ``item``, on which ``process_item``
        raised ``error``; a retry calls ``process_item`` again. Returns what
        a successful retry produced, or nothing once the item is given up on."""
        return await self.policy.recover_item(
            item,
            "process_item",
            error,
            partial(self.results_of, process_item, "process_item", None, item),
            tickets,
        )


class OffLoopStyle:
    """Builds the handler that runs a node's plain code in an executor's
    threads or processes, one piece per call."""

    def __init__(
        self,
        name: str,
        during: str,
        run: Callable[[list], Awaitable[Outcome]],
        policy: ErrorPolicy,
    ) -> None:
        self.name = name
        self.during = during
        self.run = run
        self.policy = policy

    def handler(self) -> Handler:
        name, during, run, policy = self.name, self.during, self.run, self.policy

        async def attempt_one(item: Any) -> list:
            outcome = await run([item])
            error = outcome.error or next(iter(outcome.failed.values()), None)
            if error is not None:
                raise node_error(name, during, error, item)
            return outcome.results

        async def attempt(items: list, tickets: Tickets) -> list:
            """The work again, for a retry: raises if it all fails again;
            items that fail alone get the policy each."""
            if len(items) == 1:
                return await attempt_one(items[0])
            outcome = await run(items)
            if outcome.error is not None:
                raise node_error(name, during, outcome.error)
            return await settle(items, outcome, tickets)

        async def settle(items: list, outcome: Outcome, tickets: Tickets) -> list:
            """The results of ``outcome``, with the policy applied to what failed."""
            if isinstance(outcome.error, WorkerProcessDied) and len(items) > 1:
                # Which item killed it? Each goes again alone, in a new worker
                # if need be, so the policy applies to that item only.
                policy.stats.errors += 1
                results = []
                for item in items:
                    results += await settle([item], await run([item]), tickets)
                return results
            if outcome.error is not None:
                failure = node_error(name, during, outcome.error)
                return await policy.recover(
                    items, failure, partial(attempt, items, tickets), tickets
                )
            if outcome.failed:
                failed = FailedItems(outcome.failed, outcome.results)
                return await policy.recover_failed_items(
                    items, failed, during, attempt_one, tickets
                )
            return outcome.results

        async def handle_off_loop(piece: Piece, counter: WorkerCounter) -> list:
            started = time.perf_counter()
            results = await settle(piece.items, await run(piece.items), piece.tickets)
            counter.done(len(piece.items), started)
            return results

        return handle_off_loop


async def _as_async(iterator: Any) -> Any:
    """A plain generator as an async one, closed with it."""
    with closing(iterator):
        for item in iterator:
            yield item
