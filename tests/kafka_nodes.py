"""A node for the pipelines that tests/test_kafka.py runs as separate processes."""

import os

import attrs
import trio

from nanostream import NanoStreamProcessor


@attrs.define
class Double(NanoStreamProcessor):
    """Doubles ``n`` and says which process did it; ``delay`` keeps a stream in flight."""

    delay: float = 0.0

    async def process_item(self, message):
        await trio.sleep(self.delay)
        return {"n": message["n"], "double": message["n"] * 2, "pid": os.getpid()}
