"""Nodes for the executor tests, importable by worker processes and by
``nanostream run`` (with this folder on PYTHONPATH)."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import attrs
import trio

import nanostream as ns


@attrs.define
class Square(ns.NanoStreamProcessor):
    """x -> x * x; fails on items listed in ``bad`` (always), or on the
    first attempt only at items listed in ``flaky`` (a marker file in
    ``marks`` remembers the attempt, across threads and processes)."""

    bad: list = attrs.field(factory=list)
    flaky: list = attrs.field(factory=list)
    marks: str = ""

    def process_item(self, message):
        if message in self.bad:
            raise ValueError(f"bad item {message}")
        if message in self.flaky:
            mark = Path(self.marks) / str(message)
            if not mark.exists():
                mark.touch()
                raise ValueError(f"flaky item {message}")
        return message * message


@attrs.define
class SquareBatches(ns.NanoStreamProcessor):
    """process_batch twin of :class:`Square`, reporting failures with FailedItems."""

    bad: list = attrs.field(factory=list)

    def process_batch(self, messages):
        errors = {i: ValueError(f"bad item {m}") for i, m in enumerate(messages) if m in self.bad}
        results = [m * m for m in messages if m not in self.bad]
        if errors:
            raise ns.FailedItems(errors, results)
        return results


@attrs.define
class Pid(ns.NanoStreamProcessor):
    """Sends (item, pid); setup and teardown leave a file per process in ``folder``."""

    folder: str

    def setup(self):
        (Path(self.folder) / f"setup-{os.getpid()}").touch()

    def teardown(self):
        (Path(self.folder) / f"teardown-{os.getpid()}").touch()

    def process_item(self, message):
        return (message, os.getpid())


@attrs.define
class Dies(ns.NanoStreamProcessor):
    """Its worker process dies on ``fatal``: by ``os._exit(3)``, a segfault or SIGKILL."""

    fatal: int
    how: str = "exit"

    def process_item(self, message):
        if message == self.fatal:
            if self.how == "exit":
                os._exit(3)
            if self.how == "segfault":
                ctypes.string_at(0)
            os.kill(os.getpid(), signal.SIGKILL)
        return message


@attrs.define
class FailingSetup(ns.NanoStreamProcessor):
    def setup(self):
        raise RuntimeError("no licence in this process")

    def process_item(self, message):
        return message


@attrs.define
class Sleep(ns.NanoStreamProcessor):
    """Sleeps ``seconds`` per item, blocking, and sends the item on. With
    ``folder``, its setup leaves a file named for its process id there."""

    seconds: float = 60.0
    folder: str = ""

    def setup(self):
        if self.folder:
            (Path(self.folder) / f"setup-{os.getpid()}").touch()

    def process_item(self, message):
        time.sleep(self.seconds)
        return message


@attrs.define
class SleepInThread(ns.NanoStreamProcessor):
    """Awaits a thread that sleeps ``seconds``, which cannot be cancelled."""

    seconds: float = 60.0

    async def process_item(self, message):
        await trio.to_thread.run_sync(time.sleep, self.seconds)
        return message


@attrs.define
class SlowTeardown(ns.NanoStreamProcessor):
    """Passes items on; its async teardown takes ``seconds``."""

    seconds: float = 60.0

    def process_item(self, message):
        return message

    async def teardown(self):
        await trio.sleep(self.seconds)


@attrs.define
class Started(ns.NanoStreamProcessor):
    """Touches ``flag`` on its first item, so a test knows items flow."""

    flag: str

    def process_item(self, message):
        Path(self.flag).touch()
        return message


@attrs.define
class SlowSetup(ns.NanoStreamProcessor):
    """Touches ``flag``, then blocks its setup for ``seconds``."""

    flag: str
    seconds: float = 60.0

    def setup(self):
        Path(self.flag).touch()
        time.sleep(self.seconds)

    def process_item(self, message):
        return message
