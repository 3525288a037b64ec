"""A node's workers: copies of one loop sharing an inbox and an outbox."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import trio

from .._processor import NanoStreamProcessor
from ._checkpoints import Checkpoints
from ._errors import NodeError
from ._held import HeldTickets
from ._inbox import Inbox
from ._outbox import Outbox
from ._stats import NodeStats, WorkerCounter
from ._styles import Handler, LoopStyles

if TYPE_CHECKING:
    from ._chaining import ChainedInput


class Workers:
    """Runs ``workers`` copies of the node's loop: take a piece from the
    inbox, handle it, hand the results to the outbox.

    A node that holds items back (``holding``) runs one worker, whose
    deadline (``deadline``/``on_deadline``) is checked between pieces, and
    whose emissions carry the tickets of what it let go.
    """

    def __init__(
        self,
        name: str,
        processor: NanoStreamProcessor,
        inbox: Inbox | None,
        outbox: Outbox,
        handler: Handler,
        styles: LoopStyles,
        stats: NodeStats,
        workers: int,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.name = name
        self.checkpoints = checkpoints
        self.processor = processor
        self.inbox = inbox
        self.outbox = outbox
        self.handler = handler
        self.styles = styles
        self.stats = stats
        self.workers = workers
        self.held = HeldTickets() if callable(getattr(processor, "holding", None)) else None
        #: For the head of a chain (see ``_chaining``): its items go down the chain from here.
        self.chain: ChainedInput | None = None
        stats.worker_busy_seconds = [0.0] * workers

    async def run(self) -> None:
        """Run every worker until the inbox is closed and empty."""
        assert self.inbox is not None, "a chained node's items come by its ChainedInput"
        if self.workers == 1:
            await self._work(WorkerCounter(self.stats, 0))
            return
        try:
            async with trio.open_nursery() as nursery:
                for index in range(self.workers):
                    nursery.start_soon(self._work, WorkerCounter(self.stats, index))
        except* NodeError as failures:
            first, *others = failures.exceptions
            for other in others:
                first.add_note(f"also: {other}")
            raise first from first.__cause__

    async def _work(self, counter: WorkerCounter) -> None:
        inbox, handle, outbox, held = self.inbox, self.handler, self.outbox, self.held
        assert inbox is not None
        deadline = getattr(self.processor, "deadline", None)
        timed = callable(deadline) and callable(getattr(self.processor, "on_deadline", None))
        while True:
            try:
                if timed:
                    when = deadline()
                    piece = await inbox.take(math.inf if when is None else when)
                    if piece is None:
                        await self._on_deadline(counter)
                        continue
                elif inbox.route is not None:
                    piece = await inbox.take_for(counter.index)
                else:
                    piece = await inbox.take()
            except trio.EndOfChannel:
                return
            assert piece is not None
            if self.chain is not None:
                await self.chain.run_taken(piece)
                continue
            results = await handle(piece, counter)
            tickets = piece.tickets
            if held is not None:
                tickets = held.settle(tickets, len(piece.items), self.processor.holding())
            await outbox.finish(piece, results, tickets)

    async def _on_deadline(self, counter: WorkerCounter) -> None:
        """Run a holding node's ``on_deadline`` and send on what it lets go."""
        started = time.perf_counter()
        results = await self.styles.results_of(self.processor.on_deadline, "on_deadline", None)
        counter.done(0, started)
        tickets = self.held.settle(None, 0, self.processor.holding()) if self.held else None
        if tickets is None and results and self.checkpoints is not None:
            # Counted in flight, so that no checkpoint saves the state that
            # sent them before they are handled.
            tickets = [self.checkpoints.ticket(self.name, [])]
        await self.outbox.outputs.send(results, tickets)

    async def finish(self) -> None:
        """Every parent has ended: run ``finish`` and send on what it returns,
        with the tickets of whatever the node still holds (now dropped)."""
        finish = getattr(self.processor, "finish", None)
        results = await self.styles.results_of(finish, "finish", None) if callable(finish) else []
        tickets = self.held.release_all() if self.held is not None else None
        await self.outbox.outputs.send(results, tickets)
