"""File nodes against real files and real inotify."""

import json
import os
import re
import tracemalloc
from pathlib import Path

import pytest
import trio

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


async def test_a_vanished_file_fails_alone(tmp_path: Path) -> None:
    good = [tmp_path / "1.txt", tmp_path / "3.txt"]
    for path in good:
        path.write_text(path.name)
    gone = str(tmp_path / "2.txt")
    paths = [str(good[0]), gone, str(good[1])]
    out = await read_with_policy(paths, FileReader(), on_error="skip")
    assert [item.data for item in out["read"]] == ["1.txt", "3.txt"]
    (letter,) = out["rejects"]
    assert letter.item == gone and isinstance(letter.error, FileNotFoundError)
    assert gone in str(letter.error)
    with pytest.raises(ns.NodeError, match=r"/2\.txt"):
        await read_with_policy(paths, FileReader())


@pytest.mark.parametrize(
    ("mode", "content", "where", "why"),
    [
        ("text", b"ok\nok\n\xffbad\n", 3, "not valid utf-8: invalid start byte"),
        ("lines", b"ok\nok\nok\xe9\n", 3, "not valid utf-8: invalid continuation byte"),
        ("jsonl", b'{"a": 1}\n\n{"a": }\n', 3, "not valid JSON: Expecting value (column 7)"),
        ("csv", b"x,y\n1,2\n3\n", 3, "1 fields where the header has 2"),
        ("csv", b'x,y\n1,2\n"3"4,5\n', 3, "not valid CSV: ',' expected after '\"'"),
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


def test_fields_are_yaml_parameters() -> None:
    from nanostream.nodes import load_builtin

    assert load_builtin("DirectoryListener") is WatchdogDirectoryListener
    assert json.dumps(FileReader().mode) == '"text"'
