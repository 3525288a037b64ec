"""The CPU-bound stage of bench_scale.py, imported by the pipelines it starts."""

import hashlib
import os

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Burn(NanoStreamProcessor):
    """Hashes each message ``rounds`` times (pure CPU work), then doubles
    ``n`` and says which process did it."""

    rounds: int = 1000

    def process_item(self, message):
        digest = str(message["n"]).encode()
        for _ in range(self.rounds):
            digest = hashlib.sha256(digest).digest()
        return {"n": message["n"], "double": message["n"] * 2, "pid": os.getpid()}
