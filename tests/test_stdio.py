"""StdinReader and StdoutWriter in `nanostream run`, through real pipes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

#: A safety net against a hang, never a timing assertion.
PATIENCE = 30


def pipeline(tmp_path: Path, reader: str = "", writer: str = "", middle: str = "") -> Path:
    """A pipeline file: stdin -> (middle) -> stdout, with extra parameters."""
    parent = "read"
    text = f"""\
pipeline_name: stdio
node_sequence:
  - name: read
    class: StdinReader
{reader}"""
    if middle:
        text += middle
        parent = "middle"
    text += f"""\
  - name: write
    class: StdoutWriter
    parents: [{parent}]
{writer}"""
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def run(path: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nanostream", "run", str(path), *args],
        input=stdin,
        capture_output=True,
        timeout=PATIENCE * 2,
    )


def test_lines_pass_through_unchanged(tmp_path):
    lines = b"".join(b"line %d\n" % n for n in range(100_000))
    done = run(pipeline(tmp_path), lines)
    assert done.returncode == 0, done.stderr
    assert done.stdout == lines


def test_a_last_line_without_a_newline_is_a_line(tmp_path):
    done = run(pipeline(tmp_path), b"a\nb")
    assert done.stdout == b"a\nb\n"


def test_json_lines_that_are_not_json_are_rejected_by_line(tmp_path):
    path = pipeline(
        tmp_path,
        reader="    format: jsonl\n    on_error: skip\n",
        writer="    format: jsonl\n",
    )
    done = run(path, b'{"a": 1}\nnot json\n\n{"a": 2}\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"a": 1}\n{"a": 2}\n'
    assert b"stdin:2: not valid JSON: Expecting value (column 1)" in done.stderr


def test_a_bad_line_under_fail_stops_the_run_naming_the_line(tmp_path):
    path = pipeline(tmp_path, reader="    format: jsonl\n")
    done = run(path, b'{"a": 1}\n[oops\n')
    assert done.returncode == 1
    assert b"stdin:2: not valid JSON" in done.stderr
    assert b"Traceback" not in done.stderr


def test_csv_rows_become_dicts_and_dicts_become_csv_rows(tmp_path):
    path = pipeline(
        tmp_path,
        reader="    format: csv\n    on_error: skip\n",
        writer="    format: csv\n    fieldnames: [b, a]\n",
    )
    done = run(path, b'a,b\n1,"two, three"\n4\n5,"six\nlines"\n')
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'b,a\n"two, three",1\n"six\nlines",5\n'
    assert b"stdin:3: 1 fields where the header has 2" in done.stderr


def test_bytes_pass_through_as_they_are(tmp_path):
    data = bytes(range(256)) * 1000
    path = pipeline(tmp_path, reader="    format: bytes\n", writer="    format: bytes\n")
    done = run(path, data)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


def test_an_item_json_cannot_hold_fails_alone(tmp_path):
    (tmp_path / "shapes.py").write_text(
        "def shape(line):\n    return {1, 2} if line == 'bad' else {'line': line}\n"
    )
    middle = """\
  - name: middle
    class: Map
    parents: [read]
    function: shapes:shape
"""
    path = pipeline(tmp_path, writer="    format: jsonl\n    on_error: skip\n", middle=middle)
    done = run(path, b"a\nbad\nc\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"line": "a"}\n{"line": "c"}\n'
    assert b"Object of type set is not JSON serializable" in done.stderr


def test_logs_and_the_summary_never_reach_stdout(tmp_path):
    done = run(pipeline(tmp_path), b"data\n", "--log-level", "info")
    assert done.stdout == b"data\n"
    assert b"pipeline 'stdio' started" in done.stderr


def close_after_one_line(command: list[str]) -> tuple[int, bytes]:
    """Run ``command``, read one line of its stdout ("7") and close it, as
    ``| head -1`` does; its exit status and what it wrote to stderr."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"7\n"
        process.stdout.close()
        _, errors = process.communicate(timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return process.returncode, errors


def test_a_closed_stdout_ends_the_run_cleanly(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        """\
pipeline_name: endless
node_sequence:
  - name: numbers
    class: ConstantEmitter
    thing: 7
  - name: write
    class: StdoutWriter
    parents: [numbers]
"""
    )
    returncode, errors = close_after_one_line(
        [sys.executable, "-m", "nanostream", "run", str(path)]
    )
    assert returncode == 0, errors
    assert b"Traceback" not in errors
    assert b"stdout was closed by its reader" in errors


def test_each_line_goes_on_as_soon_as_it_arrives(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", str(pipeline(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for word in (b"first", b"second"):
            process.stdin.write(word + b"\n")
            process.stdin.flush()
            # stdin is still open: the line must come out without waiting for more.
            ready, _, _ = select.select([process.stdout], [], [], PATIENCE)
            assert ready, f"{word!r} did not come out"
            assert os.read(process.stdout.fileno(), 100) == word + b"\n"
        process.stdin.close()
        assert process.wait(PATIENCE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_stdin_json_to_jsonl_keeps_unicode(tmp_path):
    path = pipeline(tmp_path, reader="    format: jsonl\n", writer="    format: jsonl\n")
    done = run(path, json.dumps({"name": "Zoë"}).encode() + b"\n")
    assert done.stdout.decode() == '{"name": "Zoë"}\n'


def test_a_closed_stdout_is_the_writers_error_in_a_program_that_handles_no_signals(tmp_path):
    script = tmp_path / "embedded.py"
    script.write_text(
        """\
import trio
import nanostream as ns
from nanostream.nodes.stdio import StdoutWriter

graph = ns.NanoStreamGraph("embedded")
graph.add("numbers", ns.ConstantEmitter(7))
graph.add("write", StdoutWriter(), parents=["numbers"])
try:
    trio.run(ns.run_graph, graph)
except ns.NodeError as error:
    raise SystemExit(f"stopped: {error}")
"""
    )
    returncode, errors = close_after_one_line([sys.executable, str(script)])
    assert returncode == 1
    assert b"stopped: node 'write' failed" in errors
    assert b"BrokenPipeError: stdout was closed by its reader" in errors
