"""Dead letters: the items a node gave up on, sent to the node that takes them."""

from __future__ import annotations

import trio

from .._processor import DeadLetter
from ._acks import Tickets, retain
from ._batches import Batch
from ._stats import NodeStats


class DeadLetterRoute:
    """The way from one node to its ``dead_letter`` node.

    Each item given up on goes as ``DeadLetter(node, item, error)``; the
    letters carry the tickets of the items' batch, so a source item is
    acknowledged once its dead letter is handled, as for any other item.
    """

    def __init__(
        self, node: str, channel: trio.MemorySendChannel, stats: NodeStats, target: NodeStats
    ) -> None:
        self._node = node
        self.channel = channel
        self._stats = stats
        self._target = target

    async def send(self, items: list, error: BaseException, tickets: Tickets) -> None:
        letters = [DeadLetter(self._node, item, error) for item in items]
        self._stats.dead_lettered += len(letters)
        if tickets is not None:
            retain(tickets, 1)
        self._target.waiting += len(letters)
        await self.channel.send(Batch(letters, tickets))
