"""Nodes that join a graph to the trio program around it through memory channels."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from .._processor import NanoStreamProcessor

logger = logging.getLogger("nanostream.run")


@attrs.define
class ChannelSource(NanoStreamProcessor):
    """A source fed by the application: emits what arrives on ``channel``.

    The graph's input ends when every send end of the channel is closed.
    Items already waiting travel on together as one batch::

        send, receive = trio.open_memory_channel(0)
        graph.add("input", nanostream.ChannelSource(receive))

    When the node ends first (``GraphRun.stop()``, a failure, a
    cancellation) it closes ``channel``, so that the application's
    ``send()`` raises ``trio.BrokenResourceError`` instead of waiting for
    ever. Items the application sent that were still waiting in the
    channel's buffer then are counted in a warning log line; a buffer of
    0 leaves none, since each ``send()`` returns only once the node took
    its item.
    """

    channel: trio.MemoryReceiveChannel = attrs.field(
        metadata={"description": "The receive end of a trio memory channel."}
    )

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        try:
            async for item in self.channel:
                batch = [item]
                while True:
                    try:
                        batch.append(self.channel.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                yield batch
        finally:
            waiting = self.channel.statistics().current_buffer_used
            self.channel.close()
            if waiting:
                logger.warning(
                    "ChannelSource ended with %d items still waiting in its channel; "
                    "they were dropped",
                    waiting,
                    extra={"event": "channel_items_dropped", "count": waiting},
                )


@attrs.define
class ChannelSink(NanoStreamProcessor):
    """A sink read by the application: sends each item to ``channel``.

    The channel is closed when the node ends (``close_at_end``), so that a
    reader's ``async for`` finishes with the graph::

        send, receive = trio.open_memory_channel(100)
        graph.add("output", nanostream.ChannelSink(send), ["upstream"])
        async for item in receive: ...
    """

    channel: trio.MemorySendChannel = attrs.field(
        metadata={"description": "The send end of a trio memory channel."}
    )
    close_at_end: bool = attrs.field(
        default=True,
        metadata={"description": "Close channel when the node ends, ending the reader's loop."},
    )

    async def process_batch(self, messages: list[Any]) -> None:
        for message in messages:
            await self.channel.send(message)

    def teardown(self) -> None:
        if self.close_at_end:
            self.channel.close()
