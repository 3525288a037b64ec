"""Exact recovery of keyed state: pipelines killed with SIGKILL at random
points and started again give the results of a run never interrupted.

Real processes (``nanostream run``), real files and inotify (a Kafka
pipeline with a Window is killed the same way in test_window.py). The
keyed node counts per user; each result it sends is ``{"user", "n"}``, the
n-th item of that user. After any number of kills,
the results of an exact run are each user's ``1..total`` with no gap (nothing
missing from the state) and nothing above the total (nothing counted
twice); a result may be sent twice (sinks are at-least-once), but always
the same.
"""

import json
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
from test_cli import start_nanostream_run, wait_while_running

COUNTER = """\
import time

import attrs
import nanostream


@attrs.define
class RunningCount(nanostream.NanoStreamProcessor):
    def process_item(self, item):
        key = self.state.key
        n = self.state.get(key, 0) + 1
        self.state[key] = n
        return {"user": key, "n": n}


def user_of(item):
    return item.data["user"]


@attrs.define
class Slow(nanostream.NanoStreamProcessor):
    # 0.2 ms an item, so that kills land in the middle of the work.

    def process_item(self, item):
        time.sleep(0.0002)
        return item
"""

FOLDER_PIPELINE = """\
pipeline_name: folder-counts
state_dir: state
checkpoint_interval: 100ms
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
    when_done: delete
  - name: read
    class: FileReader
    mode: jsonl
    parents: [watch]
  - name: count
    class: counter:RunningCount
    parents: [read]
    key: counter:user_of
  - name: slow
    class: counter:Slow
    parents: [count]
  - name: write
    class: FileWriter
    parents: [slow]
    path: out.jsonl
    fsync: false
"""

USERS = ["ann", "bob", "cy", "dee", "eve"]


def results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # A kill may cut the last line short: it is written again after the restart.
    return [json.loads(line) for line in lines if line.endswith("}")]


def assert_exact(sent: list[dict], totals: Counter) -> None:
    """Every user's counts 1..total, none above, none missing."""
    seen: dict[str, set[int]] = {}
    for result in sent:
        seen.setdefault(result["user"], set()).add(result["n"])
    assert set(seen) == set(totals)
    for user, total in totals.items():
        assert seen[user] == set(range(1, total + 1)), user


def kill_and_restart(cwd: Path, progress, kills: list[int], done) -> str:
    """Run the pipeline in ``cwd``; SIGKILL it each time ``progress()``
    reaches the next of ``kills``, start it again; stop it (SIGTERM) once
    ``done()``. Returns the last run's standard error."""
    for point in kills:
        process = start_nanostream_run(cwd)
        try:
            wait_while_running(process, lambda p=point: progress() >= p, f"{point} results", 60)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate()
    process = start_nanostream_run(cwd)
    try:
        wait_while_running(process, done, "every result", 60)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    return err


@pytest.mark.parametrize("seed", [1])
def test_a_folder_pipeline_killed_at_random_points_counts_exactly(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "pipeline.yaml").write_text(FOLDER_PIPELINE)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    totals: Counter = Counter()
    files = []
    for index in range(200):
        rows = [{"user": rng.choice(USERS)} for _ in range(rng.randint(1, 20))]
        totals.update(row["user"] for row in rows)
        files.append((f"batch-{index:04}.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    out = tmp_path / "out.jsonl"
    everything = sum(totals.values())
    kills = sorted(rng.sample(range(everything // 10, everything * 9 // 10), 3))

    def progress() -> int:
        # Files keep arriving while the pipeline runs, slower than it reads them.
        for name, text in files[:1]:
            (inbox / name).write_text(text)
        del files[:1]
        return len(results(out))

    def done() -> bool:
        progress()
        final = {(r["user"], r["n"]) for r in results(out)}
        return final >= set(totals.items())

    kill_and_restart(tmp_path, progress, kills, done)

    assert_exact(results(out), totals)
    assert list(inbox.iterdir()) == []


def test_a_clean_stop_and_start_repeats_nothing(tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "pipeline.yaml").write_text(FOLDER_PIPELINE)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    out = tmp_path / "out.jsonl"
    for run in range(2):
        (inbox / f"run-{run}.jsonl").write_text('{"user": "ann"}\n' * 10)
        process = start_nanostream_run(tmp_path)
        wait_while_running(process, lambda r=run: len(results(out)) >= 10 * (r + 1), "results")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    assert [r["n"] for r in results(out)] == list(range(1, 21))
