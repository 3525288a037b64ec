"""File nodes against real files and real inotify."""

import json
import os
from pathlib import Path

import trio

import nanostream as ns
from nanostream.nodes.directory import WatchdogDirectoryListener
from nanostream.nodes.files import FileData, FileReader, FileWriter
from nanostream.testing import process_items


async def test_reader_text_and_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("héllo\nworld\n")
    assert await process_items(FileReader(), [str(a)]) == [FileData(str(a), "héllo\nworld\n")]
    out = await process_items(FileReader(mode="bytes"), [str(a)])
    assert out == [FileData(str(a), "héllo\nworld\n".encode())]
    assert str(out[0]) == "héllo\nworld\n"


async def test_reader_lines_jsonl_csv_and_fixed_path(tmp_path: Path) -> None:
    lines = tmp_path / "l.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(2500)))
    out = await process_items(FileReader(mode="lines"), [str(lines)])
    assert [item.data for item in out] == [f"line {i}" for i in range(2500)]
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
    assert (out / "b.bin").read_bytes() == b"\x00B"
    others = sorted((out / n).read_text() for n in names if n not in ("a.txt", "b.bin"))
    assert others == ["plain", '{"k": 1}\n']
    # A trailing slash makes a directory that does not exist yet.
    await process_items(FileWriter(path=str(tmp_path / "new") + "/"), [FileData("/a/c", "C")])
    assert (tmp_path / "new" / "c").read_text() == "C"


async def test_writer_file_appends_lines(tmp_path: Path) -> None:
    target = tmp_path / "log.txt"
    target.write_text("before\n")
    await process_items(FileWriter(path=str(target)), ["one", {"a": [1]}, FileData("/p", "two")])
    await process_items(FileWriter(path=str(target)), [3])
    assert target.read_text().splitlines() == ["before", "one", '{"a": [1]}', "two", "3"]


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


def test_fields_are_yaml_parameters() -> None:
    from nanostream.nodes import load_builtin

    assert load_builtin("DirectoryListener") is WatchdogDirectoryListener
    assert json.dumps(FileReader().mode) == '"text"'
