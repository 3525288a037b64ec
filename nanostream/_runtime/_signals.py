"""SIGINT and SIGTERM for a running graph, and the bound on stopping.

The first signal drains the graph; the second cancels it. Each signal is
counted as it arrives, in the signal handler itself, so two signals that
arrive while user code holds the event loop count as two. Stopping is
bounded whatever user code does: once the graph is cancelled (second
signal) or its drain time is up, it has :data:`HARD_STOP_GRACE` seconds to
end, after which the process exits with status 128 + the signal number,
the shell's convention for a process ended by a signal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

import trio

#: Seconds a cancelled graph has to end before the process exits regardless
#: (more than the ``TEARDOWN_GRACE`` teardowns have past the drain deadline).
HARD_STOP_GRACE = 0.8

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalHandling:
    """Counts SIGINT/SIGTERM and hands each to the loop as ``on_signal(signum, count)``.

    ``in_flight`` tells how many items a forced exit abandons, for its
    last words. Must be installed and restored from the main thread.
    """

    def __init__(
        self,
        on_signal: Callable[[signal.Signals, int], None],
        in_flight: Callable[[], int],
        set_up: Callable[[], bool],
        drain_timeout: float | None,
    ) -> None:
        self._on_signal = on_signal
        self._in_flight = in_flight
        self._set_up = set_up
        self._drain_timeout = drain_timeout
        self._token: trio.lowlevel.TrioToken | None = None
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self.count = 0

    def install(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        which = signal.Signals(signum)
        if self.count > 1 or not self._set_up():  # cancelled: nothing to drain
            self._exit_after(HARD_STOP_GRACE, which)
        elif self._drain_timeout is not None:
            self._exit_after(self._drain_timeout + HARD_STOP_GRACE, which)
        assert self._token is not None
        # If the run ended as the signal came, nothing is left to stop.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._on_signal, which, self.count)

    def _exit_after(self, seconds: float, which: signal.Signals) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(seconds, self._exit, (which,))
        self._timer.daemon = True
        self._timer.start()

    def _exit(self, which: signal.Signals) -> None:
        """The graph did not end in time (user code holds the loop or
        ignores cancellation): leave now."""
        try:
            in_flight = self._in_flight()
        except Exception:
            in_flight = -1
        count = "an unknown number of" if in_flight < 0 else str(in_flight)
        message = (
            f"nanostream: {which.name}: the pipeline did not stop in time; exiting "
            f"with {count} items in flight abandoned\n"
        )
        os.write(2, message.encode())
        # Worker processes busy in user code would outlive this process.
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(128 + which)
