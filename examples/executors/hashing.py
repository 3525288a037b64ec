"""Nodes for the executors example: CPU-bound work and a blocking call."""

import hashlib
import time

import attrs

import nanostream as ns


@attrs.define
class Numbers(ns.NanoStreamProcessor):
    """A source: 0, 1, ..., count - 1."""

    count: int = 20

    def generate(self):
        yield from range(self.count)

    def expected_items(self):
        return self.count


@attrs.define
class Hash(ns.NanoStreamProcessor):
    """CPU-bound: sha256 applied ``rounds`` times; sends (number, hex digest)."""

    rounds: int = 20_000

    def process_item(self, message):
        digest = str(message).encode()
        for _ in range(self.rounds):
            digest = hashlib.sha256(digest).digest()
        return (message, digest.hex()[:12])


@attrs.define
class Lookup(ns.NanoStreamProcessor):
    """Blocking: stands for a call through a sync client that takes ``seconds``."""

    seconds: float = 0.2

    def process_item(self, message):
        time.sleep(self.seconds)
        number, digest = message
        return f"{number}: {digest}"
