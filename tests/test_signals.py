"""SIGINT and SIGTERM on a real process: drain, tear down, exit; twice: stop at once."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("signal_pipeline.py")


def start(output: Path, mode: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(output), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "started\n"
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_drains_in_flight_items_and_runs_teardown(tmp_path, signum):
    output = tmp_path / "out.txt"
    process = start(output, "drain")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    emitted = int(stdout.split()[-1])
    lines = output.read_text().splitlines()
    assert lines[-1] == "teardown"
    # Every item the source emitted reached the sink: nothing in flight was lost.
    assert [int(line) for line in lines[:-1]] == list(range(emitted))
    assert emitted > 0


def test_a_second_signal_stops_at_once(tmp_path):
    output = tmp_path / "out.txt"
    process = start(output, "stuck")
    process.send_signal(signal.SIGINT)
    # The sink never finishes its item, so the drain cannot end by itself
    # (its timeout is 60 s); the process is still running after the first signal.
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=10)
    assert process.returncode == 0
    assert output.read_text().splitlines() == ["teardown"]
