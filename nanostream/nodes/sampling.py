"""Keeping a sample of the items."""

from __future__ import annotations

import random
from typing import Any

import attrs

from .._processor import NanoStreamProcessor


def _fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"fraction must be between 0 and 1, not {value!r}")


def _at_least_one(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"every must be 1 or more, not {value!r}")


@attrs.define
class Sampler(NanoStreamProcessor):
    """Sends on a sample of the items, in order: every Nth item (the first,
    then one in each ``every``), each kept with probability ``fraction``, or
    both (every Nth item, then each of those with that probability).

    With a ``seed`` the same input gives the same sample, however the items
    were batched; without one, each run differs.
    """

    fraction: float = attrs.field(
        default=1.0,
        converter=float,
        validator=_fraction,
        metadata={"description": "The chance that each item is kept, from 0 to 1."},
    )
    every: int = attrs.field(
        default=1,
        validator=[attrs.validators.instance_of(int), _at_least_one],
        metadata={"description": "Keep the first item and then one in every this many."},
    )
    seed: int | None = attrs.field(
        default=None,
        metadata={"description": "Seed of the random choices, for a sample that repeats."},
    )
    _random: random.Random = attrs.field(init=False, repr=False, eq=False)
    # How many items came before the current batch, to count ``every`` across batches.
    _seen: int = attrs.field(default=0, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def process_batch(self, messages: list[Any]) -> list[Any]:
        kept = messages
        if self.every > 1:
            first = -self._seen % self.every
            kept = messages[first :: self.every]
        self._seen += len(messages)
        if self.fraction < 1:
            draw, fraction = self._random.random, self.fraction
            kept = [message for message in kept if draw() < fraction]
        return kept
