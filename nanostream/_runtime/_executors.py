"""Executors: where a node's plain code runs (``executor: loop | thread | process``).

``loop`` runs it on the trio thread (see ``_styles``). ``thread`` runs each
piece in a worker thread (``trio.to_thread.run_sync``, at most ``workers``
at once), for blocking code. ``process`` runs each piece in a worker
process of a `trio-parallel <https://trio-parallel.readthedocs.io/>`_
worker context, for CPU-bound code: the node is pickled once and sent to
each worker process as it starts, which runs ``setup`` there; items go in
pieces, not one by one; ``teardown`` runs in each worker process as it
exits. Worker processes fork from multiprocessing's fork server, with
nanostream imported there once, so starting or replacing one is quick.
trio-parallel is used because it runs under trio (multiprocessing's
pools block the loop), kills a worker whose job is cancelled, and starts a
new worker in place of one that died.

Cancellation: a thread is abandoned (it runs on, its result ignored); a
worker process is killed. Either way the node stops at once.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.util
import os
import pickle
import select
import signal
import sys
import threading
import time
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio
import trio_parallel

from .._graph import unpicklable
from .._processor import NanoStreamProcessor, call_hook
from ._errors import WorkerProcessDied
from ._styles import Outcome, apply_batch

logger = logging.getLogger("nanostream")


class ThreadExecutor:
    """Runs pieces in worker threads, at most ``workers`` at a time."""

    def __init__(self, processor: NanoStreamProcessor, workers: int) -> None:
        self._processor = processor
        self._limiter = trio.CapacityLimiter(workers)

    async def run(self, items: list) -> Outcome:
        return await trio.to_thread.run_sync(
            apply_batch, self._processor, items, limiter=self._limiter, abandon_on_cancel=True
        )


class ProcessExecutor:
    """Runs pieces in ``workers`` worker processes, each holding its own
    copy of the node, set up once."""

    def __init__(self, name: str, processor: NanoStreamProcessor, workers: int, grace: float):
        self._name = name
        self._processor = processor
        self._workers = workers
        self._grace = grace
        self._limiter = trio.CapacityLimiter(workers)
        self._stack = AsyncExitStack()
        self._context: trio_parallel.WorkerContext | None = None

    async def start(self) -> BaseException | None:
        """Start the worker processes, each running the node's ``setup``.

        Returns the exception a ``setup`` raised (or the node's pickling
        error), or ``None`` when every worker is ready.
        """
        try:
            payload = pickle.dumps(self._processor)
        except Exception:
            return TypeError(unpicklable(self._processor))
        # Worker processes fork from multiprocessing's fork server, which
        # imports this module (and so nanostream) once: a worker starts in
        # milliseconds rather than re-importing everything as a spawned one would.
        multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
        self._context = await self._stack.enter_async_context(
            trio_parallel.open_worker_context(
                idle_timeout=math.inf,
                init=partial(_install, payload, _import_root(self._processor), os.getpid()),
                grace_period=self._grace,
                worker_type=trio_parallel.WorkerType.FORKSERVER,
            )
        )
        errors: list[BaseException | None] = []

        async def ready() -> None:
            try:
                errors.append(await self._call(_setup_error))
            except trio_parallel.BrokenWorkerError as error:
                errors.append(
                    WorkerProcessDied(
                        f"{_died(error, 0)}; a script that runs a pipeline with "
                        "executor 'process' must start it under "
                        '`if __name__ == "__main__":` (see the multiprocessing docs)'
                    )
                )

        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(ready)
        return next((error for error in errors if error is not None), None)

    async def run(self, items: list) -> Outcome:
        try:
            return await self._call(_run_installed, items)
        except trio_parallel.BrokenWorkerError as error:
            return Outcome([], {}, _died(error, len(items)))
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            reason = (
                f"the items, or what the node made of them, could not be passed "
                f"to or from a worker process (they must be picklable): {error}"
            )
            return Outcome([], {}, TypeError(reason))

    async def _call(self, function: Any, *args: Any) -> Any:
        assert self._context is not None
        return await self._context.run_sync(
            function, *args, kill_on_cancel=True, limiter=self._limiter
        )

    async def close(self) -> None:
        """Stop the worker processes, each running the node's ``teardown``
        (for at most ``grace`` seconds, then it is killed)."""
        try:
            await self._stack.aclose()
        except trio_parallel.BrokenWorkerError as error:
            logger.warning(
                "node %r: its worker processes did not all exit cleanly: %s",
                self._name,
                error.args[0] if error.args else error,
                extra={"node": self._name, "event": "worker_exit"},
            )


def _died(error: trio_parallel.BrokenWorkerError, count: int) -> WorkerProcessDied:
    process = error.args[-1] if error.args else None
    code = getattr(process, "exitcode", None)
    if code is None:
        how = "died"
    elif code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code}"
    doing = f"while handling {count} items" if count else "as it started"
    return WorkerProcessDied(f"the worker process {how} {doing}")


# -- in the worker process ---------------------------------------------------

_installed: NanoStreamProcessor | None = None
_install_error: BaseException | None = None


def _import_root(processor: NanoStreamProcessor) -> str | None:
    """The folder the module of ``processor``'s class is imported from (a
    pipeline's own folder, say), which a worker process needs on its path."""
    name = type(processor).__module__
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None or name == "__main__":
        return None
    root = os.path.dirname(os.path.abspath(file))
    for _ in range(name.count(".")):
        root = os.path.dirname(root)
    return root


def _install(payload: bytes, root: str | None, pipeline_pid: int) -> None:
    """A worker process's start: unpickle the node and run its ``setup``,
    keeping the error (to report it) rather than dying of it."""
    global _installed, _install_error
    _exit_with(pipeline_pid)
    if root is not None and root not in sys.path:
        sys.path.append(root)
    try:
        processor = pickle.loads(payload)
        trio.run(call_hook, processor.setup)
    except Exception as error:
        _install_error = error
        return
    _installed = processor
    # multiprocessing runs its finalizers as the worker process exits.
    multiprocessing.util.Finalize(None, _teardown, exitpriority=10)


def _exit_with(pipeline_pid: int) -> None:
    """End this worker process as soon as the pipeline's process is gone,
    even while the node's code is busy: a pipeline killed with SIGKILL
    leaves no worker behind. A daemon thread waits on the process."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(pipeline_pid)
        except (AttributeError, OSError):
            handle = None
        if handle is not None:
            select.select([handle], [], [])
        else:
            while os.getppid() != 1 and _alive(pipeline_pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="nanostream pipeline watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _teardown() -> None:
    if _installed is not None:
        trio.run(call_hook, _installed.teardown)


def _setup_error() -> BaseException | None:
    return _install_error


def _run_installed(items: list) -> Outcome:
    assert _installed is not None, "the node failed its setup in this worker process"
    return apply_batch(_installed, items)
