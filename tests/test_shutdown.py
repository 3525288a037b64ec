"""Stopping is bounded whatever user code does: `nanostream run` as a real process.

The first signal drains within --drain-timeout, teardowns included; the
second signal, or the drain timeout, ends the process within about a
second, with status 128 + the signal number and the count of items in
flight. Bounds are wall-clock times of a real subprocess, with wide margins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

#: Seconds allowed, beyond the promised bound, for a loaded machine.
MARGIN = 2.5


def pipeline(tmp_path: Path, node: str) -> Path:
    """A config: an endless source, a node that flags the first item, then ``node``."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent("""\
            pipeline_name: stopping
            node_sequence:
              - name: tick
                class: ConstantEmitter
                thing: 1
                delay: 0.01
              - name: started
                class: executor_nodes:Started
                parents: [tick]
                flag: {flag}
            """).format(flag=tmp_path / "started")
        + textwrap.indent(textwrap.dedent(node), "  ")
    )
    return config


def start(config: Path, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", "--quiet", *options, str(config)],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flag = config.parent / "started"
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the pipeline did not start"
        time.sleep(0.01)
    # Let the blocking node take its first item.
    time.sleep(0.3)
    return process


def stop_twice(process: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    """Send ``signum`` twice; how long the process took to end after the
    second, and its stderr."""
    process.send_signal(signum)
    time.sleep(0.3)
    process.send_signal(signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    return time.monotonic() - sent, stderr


def test_a_sync_sleep_on_the_loop_stops_on_the_second_signal(tmp_path):
    """Both signals arrive while time.sleep holds the event loop; they count as two."""
    process = start(
        pipeline(
            tmp_path,
            """\
            - name: sleep
              class: executor_nodes:Sleep
              parents: [started]
            """,
        )
    )
    took, stderr = stop_twice(process, signal.SIGTERM)
    assert took < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "items in flight" in stderr


def test_a_sync_sleep_on_the_loop_stops_at_the_drain_timeout(tmp_path):
    process = start(
        pipeline(
            tmp_path,
            """\
            - name: sleep
              class: executor_nodes:Sleep
              parents: [started]
            """,
        ),
        "--drain-timeout",
        "1",
    )
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 1 + 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGINT, stderr


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_blocked_worker_is_abandoned_on_the_second_signal(tmp_path, executor):
    process = start(
        pipeline(
            tmp_path,
            f"""\
            - name: sleep
              class: executor_nodes:Sleep
              parents: [started]
              folder: {tmp_path}
              executor: {executor}
              workers: 2
            """,
        )
    )
    took, stderr = stop_twice(process, signal.SIGINT)
    assert took < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "items in flight" in stderr
    if executor == "process":
        # The worker processes were terminated, not left behind sleeping.
        pids = [int(path.name.split("-")[1]) for path in tmp_path.glob("setup-*")]
        assert len(pids) == 2
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "worker processes outlived the run"
            time.sleep(0.05)


def test_a_thread_that_ignores_cancellation_is_abandoned(tmp_path):
    """trio.to_thread.run_sync(time.sleep, 60) cannot be cancelled."""
    process = start(
        pipeline(
            tmp_path,
            """\
            - name: sleep
              class: executor_nodes:SleepInThread
              parents: [started]
            """,
        )
    )
    took, stderr = stop_twice(process, signal.SIGINT)
    assert took < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGINT, stderr


def test_a_slow_teardown_is_cut_at_the_drain_timeout(tmp_path):
    process = start(
        pipeline(
            tmp_path,
            """\
            - name: slow
              class: executor_nodes:SlowTeardown
              parents: [started]
            """,
        ),
        "--drain-timeout",
        "1",
    )
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "teardown did not finish in time" in stderr


def test_a_fifo_nobody_reads_does_not_hold_the_exit(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    process = start(
        pipeline(
            tmp_path,
            f"""\
            - name: write
              class: FileWriter
              parents: [started]
              path: {fifo}
            """,
        )
    )
    took, stderr = stop_twice(process, signal.SIGTERM)
    assert took < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGTERM, stderr


def test_a_clean_drain_exits_0(tmp_path):
    process = start(
        pipeline(
            tmp_path,
            """\
            - name: sink
              class: BlackHole
              parents: [started]
            """,
        )
    )
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "in flight" not in stderr


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_worker_processes_die_with_a_killed_pipeline(tmp_path):
    process = start(
        pipeline(
            tmp_path,
            f"""\
            - name: sleep
              class: executor_nodes:Sleep
              parents: [started]
              folder: {tmp_path}
              executor: process
              workers: 2
            """,
        )
    )
    pids = [int(path.name.split("-")[1]) for path in tmp_path.glob("setup-*")]
    assert len(pids) == 2
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "worker processes outlived the killed pipeline"
        time.sleep(0.05)


def test_a_signal_during_a_setup_that_blocks_stops_within_a_second(tmp_path):
    """Before every node is set up nothing flows: one signal is enough."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            pipeline_name: setting_up
            node_sequence:
              - name: tick
                class: ConstantEmitter
              - name: slow
                class: executor_nodes:SlowSetup
                parents: [tick]
                flag: {tmp_path / "started"}
            """)
    )
    process = start(config)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 1 + MARGIN, stderr
    assert process.returncode == 128 + signal.SIGTERM, stderr
