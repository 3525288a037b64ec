"""The node contract: the one class a user subclasses to write a node."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs

from ._state import KeyedState

#: The methods the runtime calls on a node, by role. A node defines at least
#: one of ``PROCESSOR_HOOKS`` or ``SOURCE_HOOKS``.
PROCESSOR_HOOKS = ("process_item", "process_batch")
SOURCE_HOOKS = ("generate", "generate_batches")
OPTIONAL_HOOKS = (
    "setup",
    "teardown",
    "finish",
    "expected_items",
    "holding",
    "deadline",
    "on_deadline",
    "process_item_batches",
    "snapshot",
    "restore",
)


class NanoStreamProcessor:
    """A node of a pipeline: a source, a processor or a sink.

    Subclass it and define one of:

    * ``process_item(self, message)``: called once per incoming item. Return
      a value to send it to every child, or ``None`` to send nothing (a
      filter). A generator (or async generator) sends each item it yields.
      It may be a plain function or ``async def``.
    * ``process_batch(self, messages)``: the same, for a whole batch at once;
      it returns (or yields) the results. Nodes that make a blocking call
      (a file write, a network round trip) use it so that the call is made
      once per batch in a thread, never once per item. When some items of
      a batch fail and others do not, it raises :class:`FailedItems`.
    * ``process_item_batches(self, message)``: optional, beside a
      ``process_item`` that yields many results per item: the same results
      yielded in lists (a generator or async generator of lists), which the
      runtime calls instead on the ``loop`` executor. Results that come in
      groups (the records of a block read from a file) then cost no step of
      a generator each. ``FileReader`` does this.
    * ``generate(self)``: makes this node a source (it takes no parents). A
      generator or async generator of items; yield :class:`WithAck` to have
      an item acknowledged once everything derived from it is handled, and
      :class:`Rejected` for input that is not a valid item.
    * ``generate_batches(self)``: a source whose items arrive in groups (a
      poll, a read) yields lists, and each list travels as one batch.

    Optional hooks ``setup(self)`` and ``teardown(self)``, plain or async,
    open and close resources: ``setup`` runs before any item flows,
    ``teardown`` after the last one, and also on error and cancellation.
    ``finish(self)``, plain or async, runs once when every parent has ended
    and may return or yield final items (a batching node flushes here).
    A source that knows how many items it will emit says so with
    ``expected_items(self)``, and the live table shows its progress.

    A node that keeps items back to send them later (a batching or
    windowing node) tells the runtime with ``holding(self) -> int``: how
    many of the items it has received it has not yet sent on, letting them
    go in the order they came. Their acknowledgements then wait with them.
    To send on after a time rather than on the next item, it also defines
    ``deadline(self)``, the ``trio.current_time()`` at which to call
    ``on_deadline(self)`` (or ``None`` for no deadline), and
    ``on_deadline``, which returns or yields what to send, like ``finish``.
    Both run in the node's own task, never beside ``process_item``.

    A node given a ``key`` keeps state per key in :attr:`state` (a
    :class:`KeyedState`), which a pipeline with a ``state_dir`` saves at
    each checkpoint and restores after a restart. Whatever else a node must
    keep across a restart (a watermark, a source's position) it returns from
    ``snapshot(self)`` (picklable), taken at each checkpoint, and is given
    back to ``restore(self, snapshot)`` before ``setup`` on the next run. A
    source's snapshot is where it stands after the last item it yielded;
    its acknowledgements run only once a checkpoint covering them is saved.
    A node that cannot work without a ``key`` says so with the class
    attribute ``needs_key = True``, and ``nanostream check`` reports a node
    of it declared without one.

    A node that must know which parent each item came from (a join) names
    its parents in parameters declared with ``metadata={"parent": True}``,
    such as ``left: str = attrs.field(metadata={"parent": True, ...})``.
    Its parents must then be exactly the ones those parameters name, which
    the graph checks; and it receives each item wrapped in a
    :class:`FromParent` that says which parent sent it (its ``key``, if it
    has one, is read from the item inside).

    A node's parameters are its attrs fields: decorate the subclass with
    ``@attrs.define`` and declare typed fields with defaults. That single
    declaration is what YAML configs are validated against. The runtime
    keeps its own state (channels, counters) outside the instance, so the
    class holds only what the user declared.
    """

    #: Whether the node keeps state by key and so cannot run without a ``key``.
    needs_key = False

    def setup(self) -> Any:
        """Open resources before any item flows."""

    @property
    def state(self) -> KeyedState:
        """This node's keyed state: a mapping from key to value, with
        ``state.key`` the key of the item being processed (see
        :class:`KeyedState`). Held by the runtime while the node runs in a
        pipeline; elsewhere (a test calling ``process_item``) a fresh,
        in-memory one."""
        state = self.__dict__.get("_nanostream_state")
        if state is None:
            state = self.__dict__["_nanostream_state"] = KeyedState()
        return state

    def teardown(self) -> Any:
        """Close resources; runs on success, error and cancellation alike."""

    def expected_items(self) -> int | None:
        """How many items this source will emit in all, or ``None`` if it
        cannot tell (an endless or unknown stream). Called by whatever
        watches the run, a few times a second, so it must be cheap."""
        return None


@attrs.frozen
class WithAck:
    """An item yielded by a source together with its acknowledgement.

    The runtime calls ``ack()`` exactly once, from the trio thread, after
    every item derived from ``item`` has been handled (consumed by a sink or
    dropped on purpose), and never if it was lost to an error under the
    ``fail`` policy. ``ack`` must not block.
    """

    item: Any
    ack: Callable[[], None]


@attrs.frozen
class FromParent:
    """An item as a node that names its parents receives it (see
    :class:`NanoStreamProcessor`): ``item``, sent by the node called ``parent``."""

    parent: str
    item: Any


def parent_parameters(processor: NanoStreamProcessor) -> dict[str, Any]:
    """The parameters of ``processor`` that name one of its parents (declared
    with ``metadata={"parent": True}``), with their values; empty for a node
    that receives its items as they are."""
    kind = type(processor)
    if not attrs.has(kind):
        return {}
    return {
        field.name: getattr(processor, field.name)
        for field in attrs.fields(kind)
        if field.metadata.get("parent")
    }


@attrs.frozen
class Rejected:
    """What a source yields for input it cannot make into an item (a message
    that is not valid JSON, say), in place of that item.

    The source's ``on_error`` policy then applies as to a failing item:
    ``fail`` stops the pipeline with ``error``, ``skip`` logs and counts
    ``raw`` (and sends it to the ``dead_letter`` node) and goes on. A
    retry cannot change what arrived, so ``retry`` goes straight to its
    ``retry_fallback``. ``ack``, if given, is called once the rejection is
    handled, as for :class:`WithAck`: a skipped message is done with, and
    not delivered again after a restart.
    """

    raw: Any
    error: Exception
    ack: Callable[[], None] | None = None


#: Why a source's ``None`` is rejected: None is never an item. Returned by
#: ``process_item`` it means "send nothing"; arriving from outside (a JSON
#: ``null``, a YAML ``null`` in a sequence) it is input to be counted, not
#: dropped unseen.
NONE_FROM_SOURCE = "the source sent None, which is never an item"


def rejected_if_none(item: Any) -> Any:
    """``item``, or a :class:`Rejected` in its place if it is ``None`` (bare
    or in a :class:`WithAck`), so that the source's error policy counts it."""
    if item is None:
        return Rejected(None, ValueError(NONE_FROM_SOURCE))
    if type(item) is WithAck and item.item is None:
        return Rejected(None, ValueError(NONE_FROM_SOURCE), item.ack)
    return item


class FailedItems(Exception):
    """What ``process_batch`` raises when some items of its batch failed and
    the others did not, so that the error policy applies to the failed
    ones alone.

    ``errors`` maps the index of each failed item in the batch to its
    exception; ``results`` is what the batch produced for the other items.
    A retry calls ``process_batch`` again with the one failed item; ``skip``
    counts and dead-letters that item only. A node that writes or sends
    item by item in one thread call (a file per item, a record per item)
    raises it instead of failing a batch that was mostly done.
    """

    def __init__(self, errors: dict[int, Exception], results: list[Any] | None = None) -> None:
        if not errors:
            raise ValueError("FailedItems needs at least one failed item")
        super().__init__(f"{len(errors)} items of the batch failed")
        self.errors = dict(errors)
        self.results = list(results or [])


@attrs.frozen
class DeadLetter:
    """What a dead-letter node receives: the item a node gave up on, and why."""

    node: str
    item: Any
    error: BaseException


def is_source(processor: NanoStreamProcessor) -> bool:
    """Whether ``processor`` produces items rather than consuming them."""
    return _defines(processor, "generate") or _defines(processor, "generate_batches")


def _defines(processor: NanoStreamProcessor, method: str) -> bool:
    return callable(getattr(processor, method, None))


def call_style(function: Callable[..., Any]) -> str:
    """How a user callable produces its result: one of
    ``"plain"``, ``"async"``, ``"generator"`` or ``"async generator"``."""
    if inspect.isasyncgenfunction(function):
        return "async generator"
    if inspect.isgeneratorfunction(function):
        return "generator"
    if inspect.iscoroutinefunction(function):
        return "async"
    return "plain"


async def call_hook(function: Callable[[], Any]) -> Any:
    """Call a lifecycle hook that may be plain or async."""
    result = function()
    if inspect.isawaitable(result):
        result = await result
    return result
