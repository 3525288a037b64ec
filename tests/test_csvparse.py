"""CsvParser: whole texts, line streams, files read by FileReader, and bad rows."""

from pathlib import Path

import pytest

from nanostream import DeadLetter, NanoStreamGraph, NodeError, SequenceEmitter
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.csvparse import CsvParser
from nanostream.nodes.files import FileData, FileReader
from nanostream.testing import Collector, collect, process_items


async def test_a_whole_text_gives_dicts_keyed_by_its_header():
    text = 'name,city\nAda,"London, UK"\n\nAlan,Wilmslow\n'
    assert await process_items(CsvParser(), [text]) == [
        {"name": "Ada", "city": "London, UK"},
        {"name": "Alan", "city": "Wilmslow"},
    ]


async def test_each_text_has_its_own_header():
    texts = ["a,b\n1,2\n", "x;y\r\n3;4\r\n"]
    assert await process_items(CsvParser(), texts[:1]) == [{"a": "1", "b": "2"}]
    assert await process_items(CsvParser(delimiter=";"), texts[1:]) == [{"x": "3", "y": "4"}]


async def test_lists_without_header_and_dicts_with_fieldnames():
    lines = ["1|'a|b'", "2|c"]
    assert await process_items(CsvParser(delimiter="|", quotechar="'", header=False), lines) == [
        ["1", "a|b"],
        ["2", "c"],
    ]
    named = CsvParser(header=False, fieldnames=["n", "s"])
    assert await process_items(named, ["1,x\n2,y\n"]) == [
        {"n": "1", "s": "x"},
        {"n": "2", "s": "y"},
    ]
    # With a header as well, fieldnames replace it.
    renamed = CsvParser(fieldnames=["n", "s"])
    assert await process_items(renamed, ["num,str\n1,x\n"]) == [{"n": "1", "s": "x"}]


async def test_line_items_take_the_first_line_as_header():
    assert await process_items(CsvParser(), ["a,b", "1,2", "3,4"]) == [
        {"a": "1", "b": "2"},
        {"a": "3", "b": "4"},
    ]


async def test_bytes_are_decoded():
    data = "é,ü\n1,2\n".encode("latin-1")
    assert await process_items(CsvParser(encoding="latin-1"), [data]) == [{"é": "1", "ü": "2"}]


async def test_files_read_whole_and_line_by_line(tmp_path: Path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("id,v\n1,a\n2,b\n")
    second.write_text("id;w\n3;c\n")
    for mode in ("text", "lines"):
        graph = NanoStreamGraph(mode)
        graph.add("paths", SequenceEmitter([]))
        graph.add("read", FileReader(mode=mode), ["paths"])
        graph.add("first", CsvParser(), ["read"])
        out = await collect(graph, inputs={"paths": [str(first)]})
        assert out["first"] == [
            FileData(str(first), {"id": "1", "v": "a"}),
            FileData(str(first), {"id": "2", "v": "b"}),
        ]
    # Lines of two files, interleaved, each with its own header.
    lines = [
        FileData(str(first), "id,v"),
        FileData(str(second), "id;w"),
        FileData(str(first), "1,a"),
        FileData(str(second), "3;c"),
    ]
    out = await process_items(CsvParser(delimiter=";"), lines[1::2])
    assert out == [FileData(str(second), {"id": "3", "w": "c"})]
    out = await process_items(CsvParser(), lines)
    assert out[0] == FileData(str(first), {"id": "1", "v": "a"})
    assert out[1] == FileData(str(second), {"id;w": "3;c"})


async def test_a_row_of_the_wrong_length_names_its_line():
    with pytest.raises(NodeError) as excinfo:
        await process_items(CsvParser(), ["a,b\n1,2\n3\n"])
    assert "ValueError: line 3: 1 field where the header has 2 (a, b)" in str(excinfo.value)
    lines = [FileData("/in/data.csv", line) for line in ["a,b", "1,2", "3,4,5"]]
    with pytest.raises(NodeError) as excinfo:
        await process_items(CsvParser(), lines)
    assert "line 3 of /in/data.csv: 3 fields where the header has 2" in str(excinfo.value)


async def test_broken_quoting_names_its_line():
    with pytest.raises(NodeError) as excinfo:
        await process_items(CsvParser(), ['a,b\n1,2\n3,"4"x\n'])
    assert "ValueError: line 3: ',' expected after '\"'" in str(excinfo.value)


async def test_bad_rows_go_to_the_dead_letter_node_and_the_rest_goes_on():
    graph = NanoStreamGraph()
    graph.add("texts", SequenceEmitter(["a,b\n1,2\n", "a,b\n1\n", "a,b\n5,6\n"]))
    graph.add("parse", CsvParser(), ["texts"], on_error="skip", dead_letter="rejects")
    rows = graph.add("rows", Collector(), ["parse"])
    rejects = graph.add("rejects", Collector())
    await collect(graph)
    assert rows.items == [{"a": "1", "b": "2"}, {"a": "5", "b": "6"}]
    (letter,) = rejects.items
    assert isinstance(letter, DeadLetter)
    assert letter.item == "a,b\n1\n"
    assert str(letter.error) == "line 2: 1 field where the header has 2 (a, b)"


async def test_items_that_are_not_text_are_refused_clearly():
    with pytest.raises(NodeError, match="CsvParser parses text, not FileData holding dict"):
        await process_items(CsvParser(), [FileData("/x.csv", {"a": "1"})])
    with pytest.raises(NodeError, match="CsvParser parses text, not int"):
        await process_items(CsvParser(), [3])


async def test_yaml_pipeline(tmp_path: Path):
    data = tmp_path / "scores.csv"
    data.write_text("player;score\nada;3\nalan;5\n")
    graph = load_text(
        """\
node_sequence:
  - name: files
    class: SequenceEmitter
  - name: read
    class: FileReader
    parents: [files]
  - name: parse
    class: CsvParser
    parents: [read]
    delimiter: ";"
    fieldnames: [who, points]
"""
    )
    out = await collect(graph, inputs={"files": [str(data)]})
    assert [row.data for row in out["parse"]] == [
        {"who": "ada", "points": "3"},
        {"who": "alan", "points": "5"},
    ]


def test_yaml_delimiter_must_be_one_character():
    text = """\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: parse
    class: CsvParser
    parents: [src]
    delimiter: ";;"
"""
    with pytest.raises(ConfigErrors) as excinfo:
        load_text(text, "p.yaml")
    assert (
        excinfo.value.errors[0]
        .format()
        .startswith(
            "p.yaml:7:16: error: node 'parse': parameter 'delimiter': delimiter must be one"
            " character, not ';;'"
        )
    )


async def test_the_dialect_options_and_a_byte_order_mark():
    parser = CsvParser(delimiter=";", quotechar="'", skipinitialspace=True)
    text = "\ufeffid; name\n1; 'a; b'\n"
    assert await process_items(parser, [text]) == [{"id": "1", "name": "a; b"}]
    excel = b"\xef\xbb\xbfid,name\r\n1,a\r\n"
    assert await process_items(CsvParser(), [excel]) == [{"id": "1", "name": "a"}]
    # Line by line, the mark is dropped from the first line of each stream.
    lines = [FileData("/x.csv", "\ufeffid,name", 0), FileData("/x.csv", "1,a", 1)]
    assert [row.data for row in await process_items(CsvParser(), lines)] == [
        {"id": "1", "name": "a"}
    ]


async def test_line_items_join_a_quoted_field_over_several_lines():
    lines = ["id,note", '1,"first', "second", 'third"', "2,plain"]
    assert await process_items(CsvParser(), lines) == [
        {"id": "1", "note": "first\nsecond\nthird"},
        {"id": "2", "note": "plain"},
    ]


async def test_a_quoted_field_never_closed_is_an_error_at_the_end():
    with pytest.raises(Exception, match="line 2: a quoted field is never closed"):
        await process_items(CsvParser(), ["id,note", '1,"open', "more"])
