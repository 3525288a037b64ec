"""Sources: running a node's ``generate`` or ``generate_batches`` into batches."""

from __future__ import annotations

from contextlib import aclosing
from types import NoneType

import trio

from .._options import NodeOptions
from .._processor import NanoStreamProcessor, Rejected, WithAck, call_style, rejected_if_none
from ._acks import Ticket
from ._batches import take
from ._checkpoints import Checkpoints
from ._errors import NodeError
from ._outbox import Outputs
from ._policy import ErrorPolicy


class Source:
    """Sends what a source produces on, in batches.

    ``generate`` items are taken up to ``max_batch`` at a time from a plain
    generator, one at a time from an async one; each list that
    ``generate_batches`` yields is one batch. :class:`WithAck` items get a
    ticket per batch; :class:`Rejected` ones go to the source's policy.
    """

    def __init__(
        self,
        name: str,
        processor: NanoStreamProcessor,
        options: NodeOptions,
        outputs: Outputs,
        policy: ErrorPolicy,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.name = name
        self.processor = processor
        self.options = options
        self.outputs = outputs
        self.policy = policy
        self.checkpoints = checkpoints

    async def run(self) -> None:
        processor = self.processor
        max_batch = self.options.max_batch
        emit = self._emit
        if callable(getattr(processor, "generate_batches", None)):
            generate, during = processor.generate_batches, "generate_batches"
        else:
            generate, during = processor.generate, "generate"
        style = call_style(generate)
        try:
            produced = generate()
            if during == "generate_batches":
                if style == "async generator":
                    async with aclosing(produced):
                        async for batch in produced:
                            await emit(list(batch))
                else:
                    for batch in produced:
                        await emit(list(batch))
            elif style == "async generator":
                async with aclosing(produced):
                    async for item in produced:
                        await emit([item])
            elif style == "generator":
                iterator = iter(produced)
                while batch := take(iterator, max_batch):
                    await emit(batch)
            else:
                raise TypeError(f"{during}() must be a generator or an async generator")
        except (trio.Cancelled, NodeError):
            raise
        except Exception as error:
            raise NodeError(self.name, during, error) from error

    async def _emit(self, items: list) -> None:
        checkpoints = self.checkpoints
        if checkpoints is None:
            await self._send(items)
            return
        with checkpoints.emitting():
            await self._send(items)
        await checkpoints.gate()

    def _ticket(self, acks: list) -> Ticket:
        if self.checkpoints is None:
            return Ticket(self.name, acks)
        return self.checkpoints.ticket(self.name, acks)

    async def _send(self, items: list) -> None:
        tickets = None
        kinds = set(map(type, items))
        if NoneType in kinds or WithAck in kinds:  # None is never an item: reject it
            items = [rejected_if_none(item) for item in items]
            kinds = set(map(type, items))
        if Rejected in kinds:
            accepted = []
            for item in items:
                if type(item) is Rejected:
                    await self._reject(item)
                else:
                    accepted.append(item)
            items = accepted
            kinds = set(map(type, items))
        if WithAck in kinds:
            acks = [item.ack for item in items if type(item) is WithAck]
            items = [item.item if type(item) is WithAck else item for item in items]
            tickets = [self._ticket(acks)]
        elif self.checkpoints is not None:
            tickets = [self._ticket([])]
        await self.outputs.send(items, tickets)

    async def _reject(self, rejected: Rejected) -> None:
        acks = [] if rejected.ack is None else [rejected.ack]
        tickets = [self._ticket(acks)] if acks or self.checkpoints is not None else None
        await self.policy.reject(rejected.raw, rejected.error, tickets)
        await self.outputs.send([], tickets)
