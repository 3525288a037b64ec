"""The runtime keys every node accepts beside its own parameters."""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from ._durations import Duration, optional_duration
from ._params import positive


def _not_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, not {value!r}")


@attrs.frozen(kw_only=True)
class NodeOptions:
    """How the runtime runs one node: its error policy, input buffer, executor and workers.

    These sit beside ``name``, ``class`` and ``parents`` in a YAML node, and
    are the keyword arguments of :meth:`NanoStreamGraph.add`.
    """

    on_error: Literal["fail", "skip", "retry"] = attrs.field(
        default="fail",
        validator=v.in_(("fail", "skip", "retry")),
        metadata={
            "description": "What an exception in this node does: 'fail' stops the "
            "pipeline, 'skip' logs and counts the item and goes on, 'retry' tries "
            "again, then applies retry_fallback."
        },
    )
    retries: int = attrs.field(
        default=3,
        validator=[v.instance_of(int), _not_negative],
        metadata={"description": "With on_error 'retry': attempts after the first."},
    )
    retry_delay: float = attrs.field(
        default=0.1,
        converter=float,
        validator=_not_negative,
        metadata={"description": "Seconds before the first retry; doubles each attempt."},
    )
    retry_max_delay: float = attrs.field(
        default=10.0,
        converter=float,
        validator=_not_negative,
        metadata={"description": "The longest wait between two retries, in seconds."},
    )
    retry_fallback: Literal["fail", "skip"] = attrs.field(
        default="fail",
        validator=v.in_(("fail", "skip")),
        metadata={"description": "What happens once the retries are used up."},
    )
    dead_letter: str | None = attrs.field(
        default=None,
        validator=v.optional(v.instance_of(str)),
        metadata={
            "description": "A node that receives each item given up on, as a "
            "DeadLetter(node, item, error), instead of it being only logged."
        },
    )
    buffer_size: int = attrs.field(
        default=16,
        validator=[v.instance_of(int), positive],
        metadata={
            "description": "How many batches this node's input holds before "
            "its parents wait (back-pressure)."
        },
    )
    executor: Literal["loop", "thread", "process"] = attrs.field(
        default="loop",
        validator=v.in_(("loop", "thread", "process")),
        metadata={
            "description": "Where this node's process_item or process_batch runs: 'loop' "
            "on the event loop (async code, cheap sync code), 'thread' in worker threads "
            "(blocking sync code), 'process' in worker processes (CPU-bound sync code)."
        },
    )
    workers: int = attrs.field(
        default=1,
        validator=[v.instance_of(int), positive],
        metadata={
            "description": "How many parts of this node's input are handled at once: "
            "copies of its loop sharing that input, each with its own thread or process "
            "under executor 'thread' or 'process'. What waits is split so that every "
            "worker has a part."
        },
    )
    ordered: bool = attrs.field(
        default=True,
        validator=v.instance_of(bool),
        metadata={
            "description": "With several workers: results leave in input order (true; "
            "for a node with a key, in order per key), or as each worker finishes (false)."
        },
    )
    max_batch: int = attrs.field(
        default=512,
        validator=[v.instance_of(int), positive],
        metadata={"description": "The most items that travel together in one batch."},
    )
    chain: bool = attrs.field(
        default=True,
        validator=v.instance_of(bool),
        metadata={
            "description": "Operator chaining: when this node and its parent run on the "
            "loop with one worker and each is the other's only link, the node handles its "
            "items in the parent's task with no channel between them; false gives it a "
            "channel and a task of its own, so that it is chained neither to its parent "
            "nor to its child."
        },
    )

    key: str | None = attrs.field(
        default=None,
        validator=v.optional(v.instance_of(str)),
        metadata={
            "description": "What this node keeps state by: a field of each item, or a "
            "function by import path ('module:function'). The runtime sets state.key to "
            "each item's key before process_item, and routes items of one key to one worker."
        },
    )
    state_ttl: Duration | None = attrs.field(
        default=None,
        converter=optional_duration,
        metadata={
            "description": "How long a key of this node's state lives after it was last "
            "written (a duration such as 30m or 7d); unset, state lives until deleted."
        },
    )

    def __attrs_post_init__(self) -> None:
        if self.dead_letter is not None and self.gives_up_by_failing:
            raise ValueError(
                "dead_letter needs on_error 'skip', or 'retry' with retry_fallback 'skip'"
            )

    @property
    def gives_up_by_failing(self) -> bool:
        """Whether an item this node cannot process stops the pipeline."""
        if self.on_error == "retry":
            return self.retry_fallback == "fail"
        return self.on_error == "fail"
