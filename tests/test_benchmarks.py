"""The benchmarks run, and every contender's output passes the benchmark's own check.

Figures are not asserted: they mean something only within one run of the
benchmark on a quiet machine.
"""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_bench_chain_runs_every_contender_and_checks_its_output():
    arguments = ["--items", "3000", "--rounds", "1", "--samples", "5", "--csv-rows", "2000"]
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_chain.py"), *arguments, "--memory-items", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    for heading in ("## Throughput", "## NanoStream's throughput", "## Idle latency", "## CSV"):
        assert heading in out
    for contender in ("NanoStream, chained", "NanoStream, unchained", "threads + `queue.Queue`"):
        assert f"| {contender} |" in out


def test_bench_state_runs_every_contender_and_checks_its_windows():
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_state.py"), "--items", "3000", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    for contender in ("plain Python loop over a dict", "NanoStream `Window`", "bytewax"):
        assert f"| {contender}" in finished.stdout
