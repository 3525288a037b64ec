"""The live table and the exit summary, drawn on rich's recording console."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import trio
import trio.testing
from rich.console import Console
from test_cli import nanostream_cmd

import nanostream as ns
from nanostream.observe import RunHolder, StatusView, show_live, summary_text


def recording_console() -> Console:
    return Console(record=True, force_terminal=True, width=120, file=io.StringIO())


def draw(view: StatusView) -> str:
    console = recording_console()
    console.print(view.render(trio.current_time()))
    return console.export_text()


def row(text: str, node: str) -> list[str]:
    """The cells of ``node``'s row (empty cells left out)."""
    [line] = [line for line in text.splitlines() if line.split()[:1] == [node]]
    return line.split()


@attrs.define
class Gated(ns.NanoStreamProcessor):
    """Holds every item until the test opens the gate."""

    gate: trio.Event

    async def process_item(self, message):
        await self.gate.wait()
        return message


async def start(nursery: trio.Nursery, graph: ns.NanoStreamGraph) -> tuple[RunHolder, trio.Event]:
    holder = RunHolder(graph)
    finished = trio.Event()

    async def run_to_the_end(task_status):
        try:
            await ns.run_graph(graph, task_status=task_status)
        finally:
            holder.finished(trio.current_time())
            finished.set()

    holder.started(await nursery.start(run_to_the_end), trio.current_time())
    return holder, finished


async def test_a_full_queue_before_one_with_room_is_the_bottleneck(nursery):
    gate = trio.Event()
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter(list(range(100))), max_batch=1)
    graph.add("gated", Gated(gate), ["numbers"], buffer_size=2, max_batch=1)
    graph.add("sink", ns.BlackHole(), ["gated"])
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await trio.testing.wait_all_tasks_blocked()

    text = draw(view)
    assert text.startswith("viewed · running · ")
    emitted = holder.run.stats["numbers"].emitted
    assert emitted < 100
    assert text.splitlines()[0].endswith(f" · sources sent {emitted} of 100 items ({emitted}%)")
    assert row(text, "numbers")[:4] == ["numbers", "SequenceEmitter", "running", f"{emitted}/100"]
    gated = row(text, "gated")
    # Items count as received once handled: the one the gate holds is in progress.
    assert gated[:5] == ["gated", "Gated", "running", "0", "0"]
    assert holder.run.stats["gated"].in_progress == 1
    assert "2/2" in gated
    assert row(text, "sink")[:5] == ["sink", "BlackHole", "running", "0", "0"]
    # The sink handles its items in gated's task (operator chaining): no queue.
    assert "chained" in row(text, "sink")
    assert "bottleneck: gated (input queue full)" in text
    # Nothing retried, dead-lettered or acknowledged: no columns for them.
    assert text.splitlines()[1].split()[-3:] == ["skip", "err", "busy"]

    gate.set()
    with trio.fail_after(30):
        await finished.wait()
    text = draw(view)
    assert text.startswith("viewed · finished · ")
    assert text.splitlines()[0].endswith(" · sources sent 100 items")
    assert row(text, "numbers")[:4] == ["numbers", "SequenceEmitter", "finished", "100/100"]
    assert row(text, "gated")[:5] == ["gated", "Gated", "finished", "100", "100"]
    assert "rates and busy time averages" in text
    assert "input queue full" not in text


async def test_rates_come_from_successive_samples(nursery, autojump_clock):
    graph = ns.NanoStreamGraph("viewed")
    graph.add("ticks", ns.ConstantEmitter(thing=1, delay=0.5))
    graph.add("sink", ns.BlackHole(), ["ticks"])
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await trio.sleep(0.25)
    text = draw(view)
    assert row(text, "ticks") == ["ticks", "ConstantEmitter", "running", "1", "0", "0"]

    await trio.sleep(2)
    text = draw(view)
    # Four more items in two seconds.
    assert row(text, "ticks") == ["ticks", "ConstantEmitter", "running", "5", "2.0", "0", "0"]
    assert row(text, "sink")[:6] == ["sink", "BlackHole", "running", "5", "0", "2.0"]
    assert "over the last 2s" in text
    # An endless source: no progress, no time left.
    assert text.splitlines()[0] == "viewed · running · 2.25s"
    holder.run.stop()
    await finished.wait()


async def test_progress_counts_down_at_the_sources_rate(nursery, autojump_clock):
    graph = ns.NanoStreamGraph("viewed")
    graph.add("ticks", ns.ConstantEmitter(thing=1, delay=0.5, max_loops=10))
    graph.add("sink", ns.BlackHole(), ["ticks"])
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await trio.testing.wait_all_tasks_blocked()
    assert holder.run.stats["ticks"].emitted == 1
    draw(view)  # the first sample: one item at 0s
    await trio.sleep(2.25)
    # Four more in 2.25 seconds, five to go: 5 / (4 / 2.25) = 2.81 seconds.
    assert draw(view).splitlines()[0] == (
        "viewed · running · 2.25s · sources sent 5 of 10 items (50%), 2.81s left"
    )
    await finished.wait()


@attrs.define
class FailsFirst(ns.NanoStreamProcessor):
    """Fails on ``bad`` items every time, and on every other item once."""

    bad: list[int]
    seen: set[int] = attrs.Factory(set)

    def process_item(self, message):
        if message in self.bad or message not in self.seen:
            self.seen.add(message)
            raise ValueError(message)
        return message


async def test_retries_and_dead_letters_get_columns_once_there_are_any(nursery):
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter([1, 2, 3]))
    options = {"on_error": "retry", "retries": 1, "retry_delay": 0, "retry_fallback": "skip"}
    graph.add("flaky", FailsFirst(bad=[2]), ["numbers"], dead_letter="dlq", **options)
    graph.add("dlq", ns.BlackHole())
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await finished.wait()
    text = draw(view)
    header = text.splitlines()[1].split()
    assert header[-4:] == ["err", "retry", "dead", "busy"]
    # 1 and 3 fail once and pass on retry; 2 fails twice and is dead-lettered.
    flaky = row(text, "flaky")
    assert flaky[:5] == ["flaky", "FailsFirst", "finished", "3", "2"]
    assert flaky[-5:-1] == ["1", "4", "3", "1"]


@attrs.define
class Miscounting(ns.SequenceEmitter):
    def expected_items(self) -> int:
        raise RuntimeError("cannot count")


async def test_a_live_table_that_fails_leaves_the_pipeline_running(nursery, caplog):
    gate = trio.Event()
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", Miscounting([1, 2, 3]))
    graph.add("gated", Gated(gate), ["numbers"])
    holder, finished = await start(nursery, graph)
    await show_live(holder, recording_console())
    assert "the live table failed and is no longer drawn" in caplog.text
    assert "RuntimeError: cannot count" in caplog.text
    gate.set()
    await finished.wait()
    assert holder.run.stats["gated"].emitted == 3


async def test_the_table_says_when_setup_is_not_done() -> None:
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter([1]))
    text = draw(StatusView(RunHolder(graph)))
    assert text.startswith("viewed · setting up 1 nodes")
    assert "numbers" not in text


async def test_the_live_table_ends_drawn_as_the_run_finished(nursery):
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter([1, 2, 3]))
    graph.add("sink", ns.BlackHole(), ["numbers"])
    console = recording_console()
    holder, finished = await start(nursery, graph)
    async with trio.open_nursery() as live:
        live.start_soon(show_live, holder, console)
        with trio.fail_after(30):
            await finished.wait()
        live.cancel_scope.cancel()
    last = console.export_text().rsplit("viewed · ", 1)[1]
    assert last.startswith("finished · ")
    assert row(last, "sink")[:5] == ["sink", "BlackHole", "finished", "3", "0"]


async def test_the_summary_says_where_the_state_was_saved(nursery, tmp_path):
    graph = ns.NanoStreamGraph("stateful", state_dir=tmp_path)
    graph.add("numbers", ns.SequenceEmitter([{"n": 1}]))
    graph.add("sink", ns.BlackHole(), ["numbers"], key="n")
    holder, finished = await start(nursery, graph)
    with trio.fail_after(30):
        await finished.wait()
    last = summary_text(holder).splitlines()[-1]
    assert last == f"state: 1 checkpoint saved to {tmp_path / 'state.sqlite3'}"


async def test_the_summary_lists_what_each_node_did(nursery):
    graph = ns.NanoStreamGraph("summed")
    graph.add("numbers", ns.SequenceEmitter(list(range(1200))))
    graph.add("sink", ns.BlackHole(), ["numbers"])
    holder, finished = await start(nursery, graph)
    with trio.fail_after(30):
        await finished.wait()
    first, header, *table = summary_text(holder).splitlines()
    assert re.fullmatch(
        r"pipeline 'summed' finished after \d+\.\d\ds: 1,200 items from the sources", first
    )
    assert header.split() == ["node", "class", "state", "in", "out", "rate/s", "skipped", "errors"]
    elapsed = holder.elapsed()
    rate = f"{1200 / elapsed:,.0f}" if 1200 / elapsed >= 100 else f"{1200 / elapsed:,.1f}"
    assert [line.split() for line in table] == [
        ["numbers", "SequenceEmitter", "finished", "0", "1,200", rate, "0", "0"],
        ["sink", "BlackHole", "finished", "1,200", "0", rate, "0", "0"],
    ]


@attrs.define
class Lines(ns.NanoStreamProcessor):
    """Makes many items of one, as a file reader makes records of a file."""

    def process_item(self, message):
        yield from range(message)


async def test_the_summary_rates_each_node_over_the_run(nursery, autojump_clock):
    graph = ns.NanoStreamGraph("file")
    graph.add("file", ns.SequenceEmitter([3000]))
    graph.add("lines", Lines(), ["file"])
    graph.add("slow", ns.Throttle(rate=1000), ["lines"])
    graph.add("sink", ns.BlackHole(), ["slow"])
    holder, finished = await start(nursery, graph)
    await finished.wait()
    first, _header, *table = summary_text(holder).splitlines()
    assert first == "pipeline 'file' finished after 3.00s: 1 item from the sources"
    rows = {line.split()[0]: line.split() for line in table}
    assert rows["file"][3:6] == ["0", "1", "0.3"]
    assert rows["lines"][3:6] == ["1", "3,000", "0.3"]
    assert rows["sink"][3:6] == ["3,000", "0", "1,000"]


async def test_the_header_says_what_is_queued_once_the_sources_are_done(nursery):
    gate = trio.Event()
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter(list(range(10))), max_batch=1)
    graph.add("gated", Gated(gate), ["numbers"], buffer_size=16, max_batch=1)
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await trio.testing.wait_all_tasks_blocked()
    first = draw(view).splitlines()[0]
    # One item is in the gated node's hands, nine wait in its queue.
    assert first.endswith(" · sources sent all 10 items; 9 batches still queued")
    gate.set()
    await finished.wait()


async def test_columns_never_narrow_between_redraws(nursery):
    gate = trio.Event()
    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter(list(range(200))), max_batch=1)
    graph.add("gated", Gated(gate), ["numbers"], buffer_size=100, max_batch=1)
    holder, finished = await start(nursery, graph)
    view = StatusView(holder)
    await trio.testing.wait_all_tasks_blocked()
    assert "100/100" in row(draw(view), "gated")
    gate.set()
    await finished.wait()
    text = draw(view)
    assert "0/100" in row(text, "gated")
    # The queue column keeps the width "100/100" gave it: seven, not five.
    header = text.splitlines()[1]
    end = header.index("queue") + len("queue")
    assert header[end - 9 : end] == "    queue"
    [line] = [line for line in text.splitlines() if line.startswith("gated ")]
    assert line[end - 9 : end] == "    0/100"


PIPELINE = textwrap.dedent("""\
    pipeline_name: shown
    node_sequence:
      - name: numbers
        class: SequenceEmitter
        sequence: [1, 2, 3]
      - name: sink
        class: BlackHole
        parents: [numbers]
    """)


def nanostream_run(
    tmp_path: Path, *options: str, pipeline: str = PIPELINE
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pipeline.yaml").write_text(pipeline)
    return nanostream_cmd("run", "pipeline.yaml", *options, cwd=tmp_path)


def test_off_a_terminal_the_summary_goes_to_stderr(tmp_path: Path) -> None:
    result = nanostream_run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    first, *table = result.stderr.splitlines()
    assert first.startswith("pipeline 'shown' finished after ")
    assert table[0] == "node     class            state     in  out  rate/s  skipped  errors"
    assert [line.split()[:5] + line.split()[6:] for line in table[1:]] == [
        ["numbers", "SequenceEmitter", "finished", "0", "3", "0", "0"],
        ["sink", "BlackHole", "finished", "3", "0", "0", "0"],
    ]


def test_quiet_leaves_stderr_to_the_logs(tmp_path: Path) -> None:
    result = nanostream_run(tmp_path, "--quiet")
    assert result.returncode == 0
    assert result.stderr == ""


def test_a_failed_run_is_summarised_before_the_error(tmp_path: Path) -> None:
    (tmp_path / "nanostream_console_nodes.py").write_text(
        "from nanostream import NanoStreamProcessor\n\n"
        "class Invert(NanoStreamProcessor):\n"
        "    def process_item(self, message):\n"
        "        return 1 / message\n"
    )
    pipeline = PIPELINE.replace("[1, 2, 3]", "[1, 0, 3]").replace(
        "class: BlackHole", "class: nanostream_console_nodes:Invert"
    )
    result = nanostream_run(tmp_path, pipeline=pipeline)
    assert result.returncode == 1
    first, *table, error = result.stderr.splitlines()
    assert first.startswith("pipeline 'shown' failed after ")
    assert table[-1].split()[:3] == ["sink", "Invert", "failed"]
    assert error == (
        "nanostream: node 'sink' failed in process_item: ZeroDivisionError: division by zero "
        "(item: 0)"
    )


def test_on_a_terminal_the_table_replaces_the_summary(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"],
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "PYTHONWARNINGS": "error", "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(terminal)
    output = b""
    try:
        while select.select([controller], [], [], 30)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
        os.close(controller)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", output).decode()
    last = text.rsplit("shown · ", 1)[1]
    assert last.startswith("finished · ")
    assert row(last, "sink")[:5] == ["sink", "BlackHole", "finished", "3", "0"]
    assert "items from the sources" not in text


async def test_a_node_with_workers_shows_the_least_and_most_busy_worker(nursery):
    class Pause(ns.NanoStreamProcessor):
        async def process_item(self, message):
            await trio.sleep(0.001)
            return message

    graph = ns.NanoStreamGraph("viewed")
    graph.add("numbers", ns.SequenceEmitter(list(range(40))))
    graph.add("pause", Pause(), ["numbers"], workers=4)
    graph.add("sink", ns.BlackHole(), ["pause"])
    holder, finished = await start(nursery, graph)
    with trio.fail_after(30):
        await finished.wait()
    view = StatusView(holder)
    cells = row(draw(view), "pause")
    assert re.fullmatch(r"\d+%", cells[-2])
    assert re.fullmatch(r"\(\d+%\.\.\d+%\)", cells[-1])
    assert len(view.worker_busy["pause"]) == 4
    assert all(share > 0 for share in view.worker_busy["pause"])
    # One worker: its share alone.
    assert re.fullmatch(r"\d+%", row(draw(view), "sink")[-1])
