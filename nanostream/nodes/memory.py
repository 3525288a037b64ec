"""Nodes that join a graph to the trio program around it through memory channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from .._processor import NanoStreamProcessor


@attrs.define
class ChannelSource(NanoStreamProcessor):
    """A source fed by the application: emits what arrives on ``channel``.

    The graph's input ends when every send end of the channel is closed.
    Items already waiting travel on together as one batch.
    """

    channel: trio.MemoryReceiveChannel

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        async for item in self.channel:
            batch = [item]
            while True:
                try:
                    batch.append(self.channel.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            yield batch


@attrs.define
class ChannelSink(NanoStreamProcessor):
    """A sink read by the application: sends each item to ``channel``.

    The channel is closed when the node ends (``close_at_end``), so that a
    reader's ``async for`` finishes with the graph.
    """

    channel: trio.MemorySendChannel
    close_at_end: bool = True

    async def process_batch(self, messages: list[Any]) -> None:
        for message in messages:
            await self.channel.send(message)

    def teardown(self) -> None:
        if self.close_at_end:
            self.channel.close()
