"""Small built-in nodes: emitters for tests and demos, a printer, a sink that discards."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import trio

from .._params import collection
from .._processor import NanoStreamProcessor


@attrs.define
class SequenceEmitter(NanoStreamProcessor):
    """Emits each item of a list, in order, then ends."""

    sequence: list[Any] = attrs.field(
        factory=list,
        validator=collection,
        metadata={"description": "The items to emit, in order.", "emits": "each"},
    )

    def generate(self) -> Iterator[Any]:
        yield from self.sequence

    def expected_items(self) -> int:
        return len(self.sequence)


@attrs.define
class ConstantEmitter(NanoStreamProcessor):
    """Emits the same thing again and again, optionally pausing between emissions."""

    thing: Any = attrs.field(
        default="foo", metadata={"description": "What to emit.", "emits": "whole"}
    )
    delay: float = attrs.field(
        default=0.0,
        converter=float,
        metadata={"description": "Seconds to wait between two emissions."},
    )
    max_loops: int | None = attrs.field(
        default=None,
        metadata={"description": "How many times to emit; empty means forever."},
    )

    @max_loops.validator
    def _check_max_loops(self, attribute: attrs.Attribute, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"max_loops must be 0 or more, not {value!r}")

    @delay.validator
    def _check_delay(self, attribute: attrs.Attribute, value: float) -> None:
        if value < 0:
            raise ValueError(f"delay must be 0 or more, not {value!r}")

    async def generate(self) -> AsyncIterator[Any]:
        emitted = 0
        while self.max_loops is None or emitted < self.max_loops:
            yield self.thing
            emitted += 1
            await trio.sleep(self.delay)

    def expected_items(self) -> int | None:
        return self.max_loops


@attrs.define
class PrintStreamProcessor(NanoStreamProcessor):
    """Prints each item on standard output and passes it on unchanged."""

    prefix: str = attrs.field(default="", metadata={"description": "Printed before each item."})

    def process_batch(self, messages: list[Any]) -> list[Any]:
        # One write per batch, not one per item.
        sys.stdout.write("".join(f"{self.prefix}{message}\n" for message in messages))
        sys.stdout.flush()
        return messages


@attrs.define
class BlackHole(NanoStreamProcessor):
    """A sink that discards every item (each counts as handled)."""

    def process_batch(self, messages: list[Any]) -> None:
        return None
