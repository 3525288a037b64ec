"""File nodes against real files and real inotify."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from test_cli import start_nanostream_run, wait_while_running

import nanostream as ns
from nanostream import DeadLetter
from nanostream.config import check_pipeline
from nanostream.nodes import files
from nanostream.nodes.directory import WatchdogDirectoryListener
from nanostream.nodes.files import FileData, FileReader, FileWriter
from nanostream.testing import Collector, process_items


async def test_reader_text_and_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("héllo\nworld\n")
    assert await process_items(FileReader(), [str(a)]) == [FileData(str(a), "héllo\nworld\n")]
    out = await process_items(FileReader(mode="bytes"), [str(a)])
    assert out == [FileData(str(a), "héllo\nworld\n".encode())]
    assert str(out[0]) == "héllo\nworld\n"
    # Line endings are data: kept whole, stripped from lines.
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"one\r\ntwo\r\n")
    assert (await process_items(FileReader(), [str(crlf)]))[0].data == "one\r\ntwo\r\n"
    assert [i.data for i in await process_items(FileReader(mode="lines"), [str(crlf)])] == [
        "one",
        "two",
    ]


async def test_reader_lines_jsonl_csv_and_fixed_path(tmp_path: Path) -> None:
    lines = tmp_path / "l.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(2500)))
    out = await process_items(FileReader(mode="lines"), [str(lines)])
    assert [item.data for item in out] == [f"line {i}" for i in range(2500)]
    assert [item.index for item in out] == list(range(2500))
    assert {item.path for item in out} == {str(lines)}
    jl = tmp_path / "j.jsonl"
    jl.write_text('{"a": 1}\n\n[2, 3]\n')
    assert [i.data for i in await process_items(FileReader(mode="jsonl"), [str(jl)])] == [
        {"a": 1},
        [2, 3],
    ]
    c = tmp_path / "c.csv"
    c.write_text("x,y\n1,2\n3,4\n")
    fixed = FileReader(mode="csv", path=str(c))
    assert [i.data for i in await process_items(fixed, ["ignored"])] == [
        {"x": "1", "y": "2"},
        {"x": "3", "y": "4"},
    ]


async def test_writer_directory_keeps_names_and_leaves_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    items = [FileData("/somewhere/a.txt", "A"), FileData("/x/b.bin", b"\x00B"), {"k": 1}, "plain"]
    assert await process_items(FileWriter(path=str(out)), items) == []
    names = sorted(os.listdir(out))
    assert "a.txt" in names and "b.bin" in names and len(names) == 4
    assert not [n for n in names if n.endswith(".tmp")]
    assert (out / "a.txt").read_text() == "A"
    # Permissions as for any new file, not those of a private temporary.
    reference = tmp_path / "made by open"
    reference.write_text("")
    assert (out / "a.txt").stat().st_mode == reference.stat().st_mode
    assert (out / "b.bin").read_bytes() == b"\x00B"
    others = sorted((out / n).read_text() for n in names if n not in ("a.txt", "b.bin"))
    assert others == ["plain", '{"k": 1}\n']
    # A trailing slash makes a directory that does not exist yet.
    unsynced = FileWriter(path=str(tmp_path / "new") + "/", fsync=False)
    await process_items(unsynced, [FileData("/a/c", "C")])
    assert (tmp_path / "new" / "c").read_text() == "C"


async def test_writer_file_appends_lines(tmp_path: Path) -> None:
    target = tmp_path / "log.txt"
    target.write_text("before\n")
    await process_items(FileWriter(path=str(target)), ["one", {"a": [1]}, FileData("/p", "two")])
    await process_items(FileWriter(path=str(target), fsync=False), [3])
    assert target.read_text().splitlines() == ["before", "one", '{"a": [1]}', "two", "3"]


async def test_writer_lines_are_what_json_dumps_writes(tmp_path: Path) -> None:
    target = tmp_path / "values.jsonl"
    values = [
        {"name": "Zoë", "tags": ["a", "ü"], "n": 1.5, "big": 10**20, "none": None, "ok": True},
        [1, {"nested": [float("nan"), float("inf")]}, "\u2028"],
        {"quote": 'say "hi"\n', 3: "int key"},
    ]
    await process_items(FileWriter(path=str(target)), [FileData("/in.csv", v) for v in values])
    expected = [json.dumps(value, ensure_ascii=False) for value in values]
    assert target.read_text(encoding="utf-8").split("\n") == [*expected, ""]


async def test_a_value_json_cannot_write_fails_and_the_next_batch_is_written(
    tmp_path: Path,
) -> None:
    target = tmp_path / "values.jsonl"
    writer = FileWriter(path=str(target))
    cycle: dict = {"name": "loop"}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="Circular reference detected"):
        await writer.process_batch([{"fine": 1}, cycle])
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        await writer.process_batch([{"fine": 2}, {"set": {1}}])
    # Nothing of a failed batch is written, and no encoder is left in a
    # state that takes the very dict it failed inside for a cycle.
    cycle["self"] = None
    await writer.process_batch([{"fine": 3}, cycle])
    assert target.read_text().splitlines() == ['{"fine": 3}', '{"name": "loop", "self": null}']


async def test_writer_appends_dead_letters_as_json_lines(tmp_path: Path) -> None:
    target = tmp_path / "bad.jsonl"
    letters = [
        DeadLetter("orders", b"{broken", ValueError("offset 4: the value is not JSON")),
        DeadLetter("parse", {"n": 1}, KeyError("total")),
    ]
    await process_items(FileWriter(path=str(target)), letters)
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {
            "node": "orders",
            "error": "ValueError: offset 4: the value is not JSON",
            "item": "b'{broken'",
        },
        {"node": "parse", "error": "KeyError: 'total'", "item": {"n": 1}},
    ]


async def test_records_of_one_file_get_numbered_names(tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_text('{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    records = await process_items(FileReader(mode="jsonl"), [str(source)])
    out = tmp_path / "out"
    await process_items(FileWriter(path=str(out) + "/"), records)
    assert sorted(os.listdir(out)) == ["data-0.jsonl", "data-1.jsonl", "data-2.jsonl"]
    assert (out / "data-2.jsonl").read_text() == '{"n": 3}\n'


async def test_a_taken_name_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("already there")
    writer = FileWriter(path=str(out))
    # Two items of one name in one batch, then one more in the next.
    await process_items(writer, [FileData("/x/a.txt", "one"), FileData("/y/a.txt", "two")])
    await process_items(writer, [FileData("/x/a.txt", "three")])
    assert sorted(os.listdir(out)) == ["a.1.txt", "a.2.txt", "a.3.txt", "a.txt"]
    contents = [(out / n).read_text() for n in ("a.txt", "a.1.txt", "a.2.txt", "a.3.txt")]
    assert contents == ["already there", "one", "two", "three"]
    await process_items(FileWriter(path=str(out), overwrite=True), [FileData("/x/a.txt", "new")])
    assert (out / "a.txt").read_text() == "new"
    assert len(os.listdir(out)) == 4


async def test_a_leftover_temporary_of_the_same_name_is_left_alone(tmp_path: Path) -> None:
    # A crashed process of the same pid may have left temporaries named as
    # this writer would name its next ones: they are skipped, not reused.
    out = tmp_path / "out"
    out.mkdir()
    upcoming = next(files._temporaries) + 1
    leftovers = [out / f".a.txt.{os.getpid()}-{upcoming + i}.tmp" for i in range(3)]
    for leftover in leftovers:
        leftover.write_text("left over")
    await process_items(FileWriter(path=str(out)), [FileData("/x/a.txt", "new")])
    assert (out / "a.txt").read_text() == "new"
    assert sorted(os.listdir(out)) == sorted(["a.txt", *(leftover.name for leftover in leftovers)])
    assert all(leftover.read_text() == "left over" for leftover in leftovers)


async def test_an_item_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    items = [
        FileData("/in/a.txt", "A"),
        FileData("/in/" + "x" * 300, "X"),
        FileData("/in/c.txt", "C"),
    ]
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter(items), max_batch=3)
    graph.add("write", FileWriter(path=str(out)), ["items"], on_error="skip", dead_letter="dlq")
    dlq = graph.add("dlq", Collector())
    run = await ns.run_graph(graph)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "c.txt"]
    [letter] = dlq.items
    assert letter.item is items[1] and isinstance(letter.error, OSError)
    assert (run.stats["write"].skipped, run.stats["write"].errors) == (1, 1)


async def test_name_templates(tmp_path: Path) -> None:
    items = [FileData("/in/r.csv", {"k": 1}, 4), FileData("/in/whole.txt", "w")]
    await process_items(
        FileWriter(path=str(tmp_path / "t") + "/", file_name="{index}_{name}"), items
    )
    assert sorted(os.listdir(tmp_path / "t")) == ["0_whole.txt", "4_r.csv"]
    await process_items(FileWriter(path=str(tmp_path / "u") + "/", file_name="{uuid}.json"), [1, 2])
    names = os.listdir(tmp_path / "u")
    assert len(names) == 2 and all(len(n) == len("0" * 32 + ".json") for n in names)
    # A constant name still loses nothing.
    await process_items(FileWriter(path=str(tmp_path / "c") + "/", file_name="all.txt"), [1, 2, 3])
    assert sorted(os.listdir(tmp_path / "c")) == ["all.1.txt", "all.2.txt", "all.txt"]


@pytest.mark.parametrize(
    ("template", "complaint"),
    [("{stem}-{line}", "unknown field {line}"), ("sub/{name}", "does not make a file name")],
)
def test_bad_name_templates_are_refused_where_they_are(
    tmp_path: Path, template: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        FileWriter(path="out", file_name=template)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "pipeline_name: p\n"
        "node_sequence:\n"
        "  - name: numbers\n"
        "    class: SequenceEmitter\n"
        "    sequence: [1]\n"
        "  - name: write\n"
        "    class: FileWriter\n"
        "    parents: [numbers]\n"
        "    path: out\n"
        f'    file_name: "{template}"\n'
    )
    (error,) = check_pipeline(config)
    assert (error.line, error.col) == (10, 16)
    assert "'file_name'" in error.message and complaint in error.message


async def test_streaming_modes_hold_one_chunk_not_the_file(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("".join(f"record number {i:08}\n" for i in range(30_000)))
    count = 0
    tracemalloc.start()
    try:
        async for item in FileReader(mode="lines").process_item(str(big)):
            count += item.index == count
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    # All the records at once take over 4 MB.
    assert peak < 1_000_000


async def read_with_policy(paths: list[str], reader: FileReader, **options) -> dict[str, list]:
    """What a reader sends on, and what it gives up on, reading ``paths``."""
    graph = ns.NanoStreamGraph("read")
    graph.add("paths", ns.SequenceEmitter(paths))
    rejects = Collector()
    if options.get("on_error") == "skip":
        options["dead_letter"] = "rejects"
        graph.add("rejects", rejects)
    graph.add("read", reader, ["paths"], **options)
    read = graph.add("read_sink", Collector(), ["read"])
    with trio.fail_after(30):
        await ns.run_graph(graph)
    return {"read": read.items, "rejects": rejects.items}


@pytest.mark.parametrize("mode", ["text", "lines"])
async def test_a_file_gone_before_it_is_read_sends_nothing_and_is_logged(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = [tmp_path / "1.txt", tmp_path / "3.txt"]
    for path in good:
        path.write_text(path.name)
    gone = str(tmp_path / "2.txt")
    paths = [str(good[0]), gone, str(good[1])]
    with caplog.at_level("DEBUG", logger="nanostream"):
        out = await read_with_policy(paths, FileReader(mode=mode))
    assert [item.data for item in out["read"]] == ["1.txt", "3.txt"]
    assert [r.path for r in caplog.records if getattr(r, "event", "") == "file_gone"] == [gone]


async def test_a_file_that_cannot_be_read_fails_alone(tmp_path: Path) -> None:
    good = tmp_path / "1.txt"
    good.write_text("1")
    folder = str(tmp_path)  # not a file: IsADirectoryError
    out = await read_with_policy([folder, str(good)], FileReader(), on_error="skip")
    assert [item.data for item in out["read"]] == ["1"]
    (letter,) = out["rejects"]
    assert letter.item == folder and isinstance(letter.error, IsADirectoryError)
    with pytest.raises(ns.NodeError, match=re.escape(folder)):
        await read_with_policy([folder], FileReader())


async def test_a_missing_fixed_path_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(ns.NodeError, match=re.escape(missing)):
        await read_with_policy(["x"], FileReader(mode="csv", path=missing))


@pytest.mark.parametrize(
    ("mode", "content", "where", "why"),
    [
        ("text", b"ok\nok\n\xffbad\n", 3, "not valid utf-8: invalid start byte"),
        ("lines", b"ok\nok\nok\xe9\n", 3, "not valid utf-8: invalid continuation byte"),
        ("jsonl", b'{"a": 1}\n\n{"a": }\n', 3, "not valid JSON: Expecting value (column 7)"),
        ("jsonl", b'{"a": 1}\nnull\n', 2, "null, and None is never an item"),
        ("csv", b"x,y\n1,2\n3\n", 3, "1 fields where the header has 2"),
        ("csv", b'x,y\n1,2\n"3"4,5\n', 3, "not valid CSV: ',' expected after '\"'"),
        ("csv", b'x,y\n"1\n', 2, "not valid CSV: unexpected end of data"),
        ("csv", b'"x\n', 1, "not valid CSV: unexpected end of data"),
        ("csv", b"x,y,x\n1,2,3\n", 1, "the header repeats x"),
    ],
)
async def test_bad_content_is_an_error_naming_file_and_line(
    tmp_path: Path, mode: str, content: bytes, where: int, why: str
) -> None:
    bad = tmp_path / f"bad.{mode}"
    bad.write_bytes(content)
    good = tmp_path / "good.txt"
    good.write_text("x,y\n5,6\n" if mode == "csv" else '"fine"\n')
    reader = FileReader(mode=mode)
    out = await read_with_policy([str(bad), str(good)], reader, on_error="skip")
    (letter,) = out["rejects"]
    assert str(letter.error) == f"{bad}:{where}: {why}"
    assert out["read"][-1].path == str(good)


@contextlib.contextmanager
def running(cwd: Path, command: list[str] | None = None) -> Iterator[subprocess.Popen]:
    """``nanostream run pipeline.yaml`` in ``cwd`` (or ``command``), in the
    background, output piped; killed on the way out if still running."""
    if command is None:
        process = start_nanostream_run(cwd)
    else:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


async def watching(listener, body):
    """Run a graph listener -> sink; call body(receive) with the emitted paths."""
    send, receive = trio.open_memory_channel(float("inf"))
    graph = ns.NanoStreamGraph("watch")
    graph.add("watch", listener)
    graph.add("sink", ns.ChannelSink(send), ["watch"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            await body(receive)
            run.stop()


async def test_half_written_file_is_emitted_only_when_closed_and_moves_in(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def body(receive):
        f = open(inbox / "slow.txt", "w")  # noqa: SIM115 - kept open across awaits
        f.write("part 1")
        f.flush()
        # Nothing may come out while the file is open: a marker file written
        # afterwards must arrive first.
        (inbox / "marker.txt").write_text("m")
        assert await receive.receive() == str(inbox / "marker.txt")
        f.write("part 2")
        f.close()
        assert await receive.receive() == str(inbox / "slow.txt")
        outside = tmp_path / "outside.txt"
        outside.write_text("moved")
        os.rename(outside, inbox / "moved.txt")
        assert await receive.receive() == str(inbox / "moved.txt")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox)), body)


async def test_recursive_watches_subdirectories(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)

    async def body(receive):
        (inbox / "sub" / "deep.txt").write_text("d")
        assert await receive.receive() == str(inbox / "sub" / "deep.txt")
        (inbox / "top.txt").write_text("t")
        assert await receive.receive() == str(inbox / "top.txt")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox), recursive=True), body)


async def test_a_folder_moved_in_brings_its_files_when_recursive(tmp_path: Path) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    (elsewhere / "batch" / "deeper").mkdir(parents=True)
    for name in ("batch/a.txt", "batch/b.txt", "batch/deeper/c.txt"):
        (elsewhere / name).write_text(name)

    async def body(receive):
        os.rename(elsewhere / "batch", inbox / "batch")
        emitted = {await receive.receive() for _ in range(3)}
        assert emitted == {
            str(inbox / name) for name in ("batch/a.txt", "batch/b.txt", "batch/deeper/c.txt")
        }
        (inbox / "marker.txt").write_text("m")
        assert await receive.receive() == str(inbox / "marker.txt")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox), recursive=True), body)


async def test_a_folder_a_file_writer_writes_to_shows_only_whole_files(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    writer = FileWriter(path=str(outbox))

    async def body(receive):
        # FileWriter writes each file as a hidden temporary, then renames it.
        await writer.process_batch([FileData("/in/a.txt", "A"), FileData("/in/b.txt", "B")])
        (outbox / ".swap").write_text("an editor's")
        (outbox / "marker.txt").write_text("m")
        emitted = [await receive.receive() for _ in range(3)]
        assert emitted == [str(outbox / name) for name in ("a.txt", "b.txt", "marker.txt")]

    await watching(WatchdogDirectoryListener(watchdog_path=str(outbox)), body)


async def test_patterns_and_existing(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_text("o")
    (inbox / "old.txt").write_text("o")

    async def body(receive):
        assert await receive.receive() == str(inbox / "old.csv")
        (inbox / "skip.txt").write_text("s")
        (inbox / "skip.tmp.csv").write_text("s")
        (inbox / "new.csv").write_text("n")
        assert await receive.receive() == str(inbox / "new.csv")

    listener = WatchdogDirectoryListener(
        watchdog_path=str(inbox), patterns=["*.csv"], ignore_patterns=["*.tmp.*"], existing=True
    )
    await watching(listener, body)


async def test_existing_file_closed_while_starting_is_emitted_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    early = open(inbox / "early.txt", "w")  # noqa: SIM115 - closed once the listener runs
    early.write("complete")
    early.flush()

    async def body(receive):
        # The observer is running: the close is reported, and the scan may
        # come before or after it. Either way the file comes out once.
        early.close()
        assert await receive.receive() == str(inbox / "early.txt")
        (inbox / "sentinel.txt").write_text("s")
        assert await receive.receive() == str(inbox / "sentinel.txt")

    try:
        await watching(WatchdogDirectoryListener(watchdog_path=str(inbox), existing=True), body)
    finally:
        early.close()


async def test_existing_file_written_again_is_emitted_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.txt").write_text("version 1")

    async def body(receive):
        assert await receive.receive() == str(inbox / "old.txt")
        with open(inbox / "old.txt", "a") as f:
            f.write(", version 2")
        assert await receive.receive() == str(inbox / "old.txt")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox), existing=True), body)


async def test_a_thousand_files_at_once_are_each_emitted_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    expected = {str(inbox / f"f{i:04}.txt") for i in range(1000)}

    async def body(receive):
        def drop():
            for path in sorted(expected):
                with open(path, "w") as f:
                    f.write(path)

        await trio.to_thread.run_sync(drop)
        seen = []
        while len(seen) < len(expected):
            seen.append(await receive.receive())
        assert sorted(seen) == sorted(expected)
        # The sentinel arriving after them proves no duplicate was pending.
        (inbox / "zz_sentinel").write_text("s")
        assert await receive.receive() == str(inbox / "zz_sentinel")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox)), body)


def finishing_graph(listener, send, **reader_options) -> ns.NanoStreamGraph:
    graph = ns.NanoStreamGraph("finish")
    graph.add("watch", listener)
    graph.add("read", FileReader(), ["watch"], **reader_options)
    graph.add("sink", ns.ChannelSink(send), ["read"])
    return graph


async def finish_run(listener, body, **reader_options) -> ns.GraphRun:
    """Run listener -> FileReader -> sink; ``body(receive)`` reads what the
    sink gets, then the run is stopped, and drains."""
    send, receive = trio.open_memory_channel(float("inf"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(
                ns.run_graph, finishing_graph(listener, send, **reader_options)
            )
            await body(receive)
            run.stop()
    return run


@pytest.mark.parametrize("when_done", ["delete", "move"])
async def test_a_file_is_deleted_or_moved_once_its_item_is_handled(
    tmp_path: Path, when_done: str
) -> None:
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "a.txt").write_text("a")
    (inbox / "sub" / "b.txt").write_text("b")
    if when_done == "move":
        done.mkdir()
        (done / "a.txt").write_text("an older a")
    listener = WatchdogDirectoryListener(
        watchdog_path=str(inbox),
        existing=True,
        recursive=True,
        when_done=when_done,
        done_dir=str(done) if when_done == "move" else None,
    )

    async def body(receive):
        got = {(await receive.receive()).data for _ in range(2)}
        (inbox / "c.txt").write_text("c")
        got.add((await receive.receive()).data)
        assert got == {"a", "b", "c"}

    run = await finish_run(listener, body)
    assert run.stats["watch"].acknowledged == 3
    assert [path.name for path in inbox.rglob("*")] == ["sub"]
    if when_done == "move":
        moved = {str(path.relative_to(done)): path.read_text() for path in done.rglob("*.txt")}
        assert moved == {"a.txt": "an older a", "a.1.txt": "a", "sub/b.txt": "b", "c.txt": "c"}


async def test_a_failed_file_stays_and_a_skipped_one_is_done_with(tmp_path: Path) -> None:
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    (inbox / "bad.txt").write_bytes(b"\xff not utf-8")
    # Under fail, the item is never acknowledged: the file stays for the next run.
    listener = WatchdogDirectoryListener(
        watchdog_path=str(inbox), existing=True, when_done="move", done_dir=str(done)
    )
    with pytest.raises(ns.NodeError, match="not valid utf-8"), trio.fail_after(30):
        await ns.run_graph(finishing_graph(listener, trio.open_memory_channel(1)[0]))
    assert os.listdir(inbox) == ["bad.txt"] and os.listdir(done) == []

    # Under skip, the runtime acknowledges a skipped item, as a Kafka source
    # commits a skipped message: the file is done with, and moved.
    async def body(receive):
        (inbox / "good.txt").write_text("good")
        assert (await receive.receive()).data == "good"

    listener = WatchdogDirectoryListener(
        watchdog_path=str(inbox), existing=True, when_done="move", done_dir=str(done)
    )
    run = await finish_run(listener, body, on_error="skip")
    assert run.stats["read"].skipped == 1
    assert os.listdir(inbox) == []
    assert sorted(os.listdir(done)) == ["bad.txt", "good.txt"]


@attrs.define
class Gate(ns.NanoStreamProcessor):
    """Tells the test of each item it gets, and holds it until let through."""

    arrived: trio.MemorySendChannel
    through: trio.MemoryReceiveChannel

    async def process_item(self, message):
        await self.arrived.send(message)
        await self.through.receive()
        return message


@pytest.mark.parametrize("how", ["written again", "closed again unchanged", "being written"])
async def test_a_file_written_while_in_flight_is_not_finished_early(
    tmp_path: Path, how: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    arrived_send, arrived = trio.open_memory_channel(float("inf"))
    let_through, through = trio.open_memory_channel(float("inf"))
    sink_send, sink = trio.open_memory_channel(float("inf"))
    probe_send, probe = trio.open_memory_channel(float("inf"))
    graph = ns.NanoStreamGraph("again")
    graph.add("watch", WatchdogDirectoryListener(watchdog_path=str(inbox), when_done="delete"))
    graph.add("gate", Gate(arrived_send, through), ["watch"])
    graph.add("sink", ns.ChannelSink(sink_send), ["gate"])
    # Sees each batch as the listener emits it, after the trip to a worker
    # thread that finishes the files acknowledged before.
    graph.add("probe", ns.ChannelSink(probe_send), ["watch"])
    a, b = str(inbox / "a.txt"), str(inbox / "b.txt")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            (inbox / "a.txt").write_text("version 1")
            assert await arrived.receive() == a
            assert await probe.receive() == a
            # While the first version is held at the gate, the file is
            # written again and closed, or closed again unchanged (both
            # emit it again), or is being written.
            writing = open(a, "a")  # noqa: SIM115 - closed below
            if how != "closed again unchanged":
                writing.write(" and more")
                writing.flush()
            if how != "being written":
                writing.close()
                assert await probe.receive() == a
            await let_through.send(None)
            assert await sink.receive() == a
            await trio.testing.wait_all_tasks_blocked()
            assert run.stats["watch"].acknowledged == 1
            (inbox / "b.txt").write_text("b")
            while await probe.receive() != b:
                pass
            # The first acknowledgement has been dealt with, and left the file.
            expected = "version 1" if how == "closed again unchanged" else "version 1 and more"
            assert (inbox / "a.txt").read_text() == expected
            # Once closed, the file is emitted again, and that emission finishes it.
            writing.close()
            await let_through.send(None)
            await let_through.send(None)
            assert {await sink.receive(), await sink.receive()} == {a, b}
            run.stop()
    assert os.listdir(inbox) == []


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"when_done": "move"}, "when_done: move needs done_dir"),
        ({"when_done": "delete", "done_dir": "done"}, "done_dir is only for when_done: move"),
        ({"when_done": "move", "done_dir": "inbox/"}, "is watchdog_path itself"),
        (
            {"when_done": "move", "done_dir": "inbox/done", "recursive": True},
            "which is watched recursively: a file moved there would be emitted again",
        ),
        ({"when_done": "archive"}, "expected one of 'keep', 'delete', 'move'"),
    ],
)
def test_when_done_options_are_checked(tmp_path: Path, options: dict, complaint: str) -> None:
    if options["when_done"] != "archive":  # a Literal, checked by the config's types
        with pytest.raises(ValueError, match=re.escape(complaint)):
            WatchdogDirectoryListener(watchdog_path="inbox", **options)
    config = tmp_path / "pipeline.yaml"
    parameters = "".join(f"\n    {key}: {json.dumps(value)}" for key, value in options.items())
    config.write_text(
        "pipeline_name: p\n"
        "node_sequence:\n"
        "  - name: watch\n"
        "    class: WatchdogDirectoryListener\n"
        f"    watchdog_path: inbox{parameters}\n"
        "  - name: print\n"
        "    class: PrintStreamProcessor\n"
        "    parents: [watch]\n"
    )
    (error,) = check_pipeline(config)
    assert "'watch'" in error.message and complaint in error.message


async def test_done_dir_is_made_and_must_be_on_the_same_filesystem(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    done = tmp_path / "new" / "done"
    listener = WatchdogDirectoryListener(
        watchdog_path=str(inbox), when_done="move", done_dir=str(done)
    )
    await listener.setup()
    await listener.teardown()
    assert done.is_dir()
    # A link into the watched folder is found out once it can be followed.
    (tmp_path / "link").symlink_to(inbox)
    linked = WatchdogDirectoryListener(
        watchdog_path=str(inbox), when_done="move", done_dir=str(tmp_path / "link")
    )
    with pytest.raises(ValueError, match="is watchdog_path itself"):
        await linked.setup()
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or elsewhere.stat().st_dev == inbox.stat().st_dev:
        pytest.skip("no second filesystem to move files to")
    with tempfile.TemporaryDirectory(dir=elsewhere) as other:
        apart = WatchdogDirectoryListener(
            watchdog_path=str(inbox), when_done="move", done_dir=other
        )
        with pytest.raises(ValueError, match="is on another filesystem than watchdog_path"):
            await apart.setup()


INBOX_PIPELINE = """\
pipeline_name: inbox
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
    when_done: {when_done}{done_dir}
  - name: read
    class: FileReader
    parents: [watch]
    max_batch: 20
  - name: slow
    class: Throttle
    parents: [read]
    rate: 100
    max_batch: 20
  - name: write
    class: FileWriter
    parents: [slow]
    path: outbox/
"""


@pytest.mark.parametrize("when_done", ["delete", "move"])
def test_an_inbox_pipeline_killed_and_restarted_loses_no_file(
    tmp_path: Path, when_done: str
) -> None:
    inbox, outbox, done = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "done"
    inbox.mkdir()
    done_dir = "\n    done_dir: done" if when_done == "move" else ""
    (tmp_path / "pipeline.yaml").write_text(
        INBOX_PIPELINE.format(when_done=when_done, done_dir=done_dir)
    )
    inputs = {f"f{i:03}.txt": f"file {i}\n" for i in range(150)}
    for name, content in inputs.items():
        (inbox / name).write_text(content)

    def written() -> set[str]:
        """The contents in the out folder, less the temporary file a kill may
        have left (pathlib's glob matches hidden names)."""
        if not outbox.exists():
            return set()
        return {path.read_text() for path in outbox.iterdir() if not path.name.startswith(".")}

    def left() -> set[str]:
        return set(os.listdir(inbox))

    with running(tmp_path) as process:
        # Killed mid-stream: some files done, many not yet. The listener
        # emits a hundred files at a time, and each hundred is done as a
        # whole: the nodes after it take 20 at a time, never two hundreds
        # together, so the first hundred is done long before the second.
        wait_while_running(process, lambda: len(inputs) - len(left()) >= 10, "files to be done")
        process.send_signal(signal.SIGKILL)
        process.communicate()
    remaining = left()
    assert 0 < len(remaining) < len(inputs) - 10
    # Every file that left the inbox had been written out.
    for name in set(inputs) - remaining:
        assert inputs[name] in written(), name
    if when_done == "move":
        assert sorted(os.listdir(done)) == sorted(set(inputs) - remaining)
    # More files arrive while the pipeline is down.
    for i in range(150, 170):
        inputs[f"f{i:03}.txt"] = f"file {i}\n"
        (inbox / f"f{i:03}.txt").write_text(inputs[f"f{i:03}.txt"])

    with running(tmp_path) as process:
        wait_while_running(process, lambda: not left(), "the inbox to empty")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert written() == set(inputs.values())
    if when_done == "move":
        assert sorted(os.listdir(done)) == sorted(inputs)
        assert all((done / name).read_text() == inputs[name] for name in inputs)


def test_fields_are_yaml_parameters() -> None:
    from nanostream.nodes import load_builtin

    assert load_builtin("DirectoryListener") is WatchdogDirectoryListener
    assert json.dumps(FileReader().mode) == '"text"'


async def test_workers_writing_one_name_never_replace_each_other(tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [f"item {i}" for i in range(1000)]
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter(items), max_batch=10)
    writer = FileWriter(path=str(out) + "/", file_name="out.txt", fsync=False)
    graph.add("write", writer, ["items"], workers=4, max_batch=10)
    with trio.fail_after(60):
        await ns.run_graph(graph)
    written = [path.read_text() for path in out.iterdir()]
    assert sorted(written) == sorted(items)


@pytest.mark.parametrize("claim", ["renameat2", "link"])
def test_threads_claiming_one_name_each_get_their_own(
    tmp_path: Path, claim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writers that share nothing (threads here, processes alike) and race
    # for the same free name: the claim is one rename that cannot replace,
    # or, where the filesystem lacks that, a hard link.
    import threading

    if claim == "link":
        monkeypatch.setattr(files, "_renameat2", None)

    def write(worker: int) -> None:
        after = 0
        for i in range(100):
            _, after = files._write_atomically(
                str(tmp_path), "x.txt", f"{worker}-{i}", replace=False, after=after
            )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = sorted(path.read_text() for path in tmp_path.iterdir())
    assert written == sorted(f"{w}-{i}" for w in range(8) for i in range(100))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up for real."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr!r}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


async def test_a_line_write_on_a_full_disk_leaves_no_partial_line(small_disk: Path) -> None:
    out = small_disk / "rows.jsonl"
    writer = FileWriter(path=str(out))
    await process_items(writer, [{"row": 1}, {"row": 2}])
    with pytest.raises(OSError, match="No space left"):
        await writer.process_batch([{"big": "x" * 100_000}])
    assert out.read_text() == '{"row": 1}\n{"row": 2}\n'
    await process_items(writer, [{"row": 3}])
    assert out.read_text() == '{"row": 1}\n{"row": 2}\n{"row": 3}\n'


async def test_a_file_write_on_a_full_disk_fails_alone_and_leaves_nothing(
    small_disk: Path,
) -> None:
    items = [FileData("/in/a.txt", "A"), FileData("/in/big.txt", "x" * 100_000)]
    items.append(FileData("/in/c.txt", "C"))
    out = await read_with_policy_writer(items, FileWriter(path=str(small_disk) + "/"))
    assert out == ["/in/big.txt"]
    assert {p.name: p.read_text() for p in small_disk.iterdir()} == {"a.txt": "A", "c.txt": "C"}


async def read_with_policy_writer(items: list, writer: FileWriter) -> list:
    """Write ``items`` under on_error: skip; the paths of those given up on."""
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter(items))
    rejects = graph.add("rejects", Collector())
    graph.add("write", writer, ["items"], on_error="skip", dead_letter="rejects")
    with trio.fail_after(30):
        await ns.run_graph(graph)
    return [letter.item.path for letter in rejects.items]


async def test_line_mode_makes_the_parent_folders(tmp_path: Path) -> None:
    out = tmp_path / "out" / "deeper" / "rows.jsonl"
    await process_items(FileWriter(path=str(out)), [{"a": 1}])
    assert out.read_text() == '{"a": 1}\n'


async def test_names_up_to_the_filesystem_limit_are_written_and_numbered(tmp_path: Path) -> None:
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    long = "é" * ((name_max - 4) // 2) + ".txt"  # two bytes a character in UTF-8
    assert len(os.fsencode(long)) <= name_max
    writer = FileWriter(path=str(tmp_path / "out") + "/")
    await process_items(writer, [FileData(f"/in/{long}", "one"), FileData(f"/in/{long}", "two")])
    names = sorted(os.listdir(tmp_path / "out"))
    assert len(names) == 2 and long in names
    (numbered,) = set(names) - {long}
    assert numbered.endswith(".1.txt") and len(os.fsencode(numbered)) <= name_max
    assert (tmp_path / "out" / long).read_text() == "one"
    assert (tmp_path / "out" / numbered).read_text() == "two"


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("mode", "content", "expected"),
    [
        ("text", BOM + b"id,name\r\n1,a\r\n", ["id,name\r\n1,a\r\n"]),
        ("lines", BOM + b"first\nsecond\n", ["first", "second"]),
        ("jsonl", BOM + b'{"a": 1}\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),
        ("csv", BOM + b"id,name\r\n1,a\r\n", [{"id": "1", "name": "a"}]),
    ],
)
async def test_a_utf8_byte_order_mark_is_dropped(
    tmp_path: Path, mode: str, content: bytes, expected: list
) -> None:
    path = tmp_path / "excel.txt"
    path.write_bytes(content)
    out = await process_items(FileReader(mode=mode), [str(path)])
    assert [item.data for item in out] == expected
    # Another encoding is still the user's to choose.
    kept = await process_items(FileReader(mode="lines", encoding="latin-1"), [str(path)])
    assert kept[0].data.startswith("ï»¿")


async def test_csv_mode_takes_the_dialect(tmp_path: Path) -> None:
    path = tmp_path / "semicolons.csv"
    path.write_text("id; name; note\n1; 'a; b'; 'it''s'\n2; c; 'multi\nline'\n")
    reader = FileReader(mode="csv", delimiter=";", quotechar="'", skipinitialspace=True)
    out = await process_items(reader, [str(path)])
    assert [item.data for item in out] == [
        {"id": "1", "name": "a; b", "note": "it's"},
        {"id": "2", "name": "c", "note": "multi\nline"},
    ]
    escaped = tmp_path / "escaped.csv"
    escaped.write_text("a,b\nx\\,y,z\n")
    reader = FileReader(mode="csv", escapechar="\\", quoting="none")
    assert [i.data for i in await process_items(reader, [str(escaped)])] == [{"a": "x,y", "b": "z"}]


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("delimiter: ';;'", "delimiter must be one character"),
        ("encoding: klingon", "encoding 'klingon' is not an encoding Python knows"),
        ("max_line_bytes: 0", "max_line_bytes must be more than 0"),
    ],
)
def test_reader_options_are_checked_where_they_are(
    tmp_path: Path, option: str, complaint: str
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"node_sequence:\n  - name: read\n    class: FileReader\n    mode: csv\n    {option}\n"
    )
    (message,) = [str(error) for error in check_pipeline(str(config))]
    assert "pipeline.yaml:5:" in message and complaint in message, message


async def test_a_line_longer_than_max_line_bytes_is_bad_input_in_bounded_memory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "one-line.txt"
    with open(path, "wb") as f:
        f.write(b"short\n")
        for _ in range(64):
            f.write(b"x" * 1_000_000)
        f.write(b"\nafter\n")
    reader = FileReader(mode="lines", max_line_bytes=1_000_000)
    tracemalloc.start()
    try:
        out = await read_with_policy([str(path)], reader, on_error="skip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The line before it was read in the same block, and goes with the failed item.
    assert out["read"] == []
    (letter,) = out["rejects"]
    assert str(letter.error) == f"{path}:2: a line longer than max_line_bytes (1000000 bytes)"
    assert peak < 8_000_000  # the file is 64 MB
    # A line of exactly max_line_bytes is read.
    exact = tmp_path / "exact.txt"
    exact.write_bytes(b"y" * 1000 + b"\n")
    (item,) = await process_items(FileReader(mode="lines", max_line_bytes=1000), [str(exact)])
    assert item.data == "y" * 1000


async def test_csv_mode_skips_blank_lines_before_the_header_and_between_rows(
    tmp_path: Path,
) -> None:
    # More blank lines in a row than a chunk of rows read at a time.
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("\n\nid,v\n1,a\n" + "\n" * 5000 + "2,b\n\n")
    out = await process_items(FileReader(mode="csv"), [str(sparse)])
    assert [(item.data, item.index) for item in out] == [
        ({"id": "1", "v": "a"}, 0),
        ({"id": "2", "v": "b"}, 1),
    ]


async def test_csv_mode_streams_a_big_file_in_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("id;text\n")
        for i in range(30_000):
            f.write(f'{i};"row {i}, with a delimiter; and ""quotes"""\n')
    count = 0
    tracemalloc.start()
    try:
        async for item in FileReader(mode="csv", delimiter=";").process_item(str(big)):
            count += item.data["id"] == str(count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < 3_000_000  # the file is 1.3 MB, its rows as dicts ten times that


FILE_SIZE_LIMIT = """
import resource, signal, sys
import nanostream as ns
from nanostream.nodes.files import FileWriter
from nanostream.testing import run_processor

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
writer = FileWriter(path=sys.argv[1])
run_processor(writer, [{"row": 1}, {"row": 2}])
try:
    run_processor(writer, [{"big": "x" * 10_000}])
except Exception as error:
    print(type(error).__name__, error)
run_processor(writer, [{"row": 3}])
"""


def test_a_line_write_past_the_file_size_limit_leaves_no_partial_line(tmp_path: Path) -> None:
    # The same as a full disk, without root: RLIMIT_FSIZE in a process of its own.
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "File too large" in result.stdout
    assert out.read_text() == '{"row": 1}\n{"row": 2}\n{"row": 3}\n'


# A max_line_bytes of 12 makes the streaming modes read 13 bytes at a time,
# so these lines (and the two bytes of the é) start in one read and end in another.
SPANNING = "line one\nline two\r\nthree\n\nfour é\nlast"


@pytest.mark.parametrize("mode", ["lines", "csv"])
async def test_lines_that_span_reads_are_read_whole(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "spanning.txt"
    path.write_bytes(("\ufeff" + SPANNING).encode("utf-8"))
    items = await process_items(FileReader(mode=mode, max_line_bytes=12), [str(path)])
    if mode == "lines":
        assert [item.data for item in items] == [
            "line one", "line two", "three", "", "four é", "last"
        ]  # fmt: skip
    else:
        assert [item.data for item in items] == [
            {"line one": "line two"}, {"line one": "three"}, {"line one": "four é"},
            {"line one": "last"},
        ]  # fmt: skip
    assert [item.index for item in items] == list(range(len(items)))


async def test_a_bad_byte_far_into_a_file_names_its_line_and_keeps_those_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "late.txt"
    good = [f"line {n:05}\n" for n in range(20_000)]  # 240 kB: several reads
    path.write_bytes("".join(good).encode() + b"still fine, then \xe9 bad\nafter\n")
    reader = FileReader(mode="lines")
    sent = []
    with pytest.raises(ValueError) as raised:
        async for item in reader.process_item(str(path)):
            sent.append(item.data)
    assert str(raised.value) == f"{path}:20001: not valid utf-8: invalid continuation byte"
    assert sent == [line.rstrip("\n") for line in good]


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"0123456789\n" * 3 + b"0123456789A\n", 4),  # one byte too many, within a read
        (b"short\n" + b"x" * 25 + b"\n", 2),  # spans three reads
        (b"short\nlong" + b"y" * 30, 2),  # the last line, with no newline
    ],
)
async def test_a_line_over_the_limit_is_found_across_reads(
    tmp_path: Path, content: bytes, where: int
) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(content)
    reader = FileReader(mode="lines", max_line_bytes=10)
    with pytest.raises(ValueError) as raised:
        async for _ in reader.process_item(str(path)):
            pass
    assert str(raised.value) == f"{path}:{where}: a line longer than max_line_bytes (10 bytes)"
