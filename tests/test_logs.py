"""Logging for ``nanostream run``: levels, plain lines and JSON lines."""

from __future__ import annotations

import json
import logging
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_cli import nanostream_cmd

from nanostream.observe import configure_logging

SKIPPING = textwrap.dedent("""\
    pipeline_name: logged
    node_sequence:
      - name: numbers
        class: SequenceEmitter
        sequence: [1, 2, 0, 4]
      - name: invert
        class: nanostream_log_nodes:Invert
        parents: [numbers]
        on_error: skip
      - name: sink
        class: BlackHole
        parents: [invert]
    """)

NODES = textwrap.dedent("""\
    import attrs
    from nanostream import NanoStreamProcessor

    @attrs.define
    class Invert(NanoStreamProcessor):
        def process_item(self, message):
            return 1 / message
    """)


def run_logged(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "nanostream_log_nodes.py").write_text(NODES)
    (tmp_path / "pipeline.yaml").write_text(SKIPPING)
    return nanostream_cmd("run", "pipeline.yaml", *options, cwd=tmp_path)


def test_json_lines_carry_the_pipeline_events_and_counts(tmp_path: Path) -> None:
    result = run_logged(tmp_path, "--log-format", "json", "--log-level", "INFO", "--quiet")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}
        assert record["time"].endswith("+00:00")
    # The nodes may process items before the start is logged.
    by_event = {record.get("event"): record for record in records}
    assert len(by_event) == len(records) == 3
    started, skipped, finished = (
        by_event["started"],
        by_event["skipped"],
        by_event["finished"],
    )
    assert [started["level"], skipped["level"], finished["level"]] == ["INFO", "WARNING", "INFO"]
    assert records[-1] is finished
    assert started["logger"] == "nanostream.run"
    assert (started["pipeline"], started["event"]) == ("logged", "started")
    assert started["message"] == "pipeline 'logged' started: 3 nodes"
    assert skipped["logger"] == "nanostream"
    assert (skipped["pipeline"], skipped["node"]) == ("logged", "invert")
    assert skipped["message"].startswith(
        "skipped: node 'invert' failed in process_item: ZeroDivisionError: division by zero"
    )
    assert (finished["pipeline"], finished["event"]) == ("logged", "finished")
    assert finished["counts"] == {
        "numbers": {"received": 0, "emitted": 4, "skipped": 0, "errors": 0},
        "invert": {"received": 4, "emitted": 3, "skipped": 1, "errors": 1},
        "sink": {"received": 3, "emitted": 0, "skipped": 0, "errors": 0},
    }


def test_plain_lines_at_the_default_level_show_warnings_only(tmp_path: Path) -> None:
    result = run_logged(tmp_path, "--quiet")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert " WARNING nanostream: skipped: node 'invert' failed in process_item" in line


def test_an_unknown_level_is_a_usage_error(tmp_path: Path) -> None:
    result = run_logged(tmp_path, "--log-level", "loud")
    assert result.returncode == 2
    assert "argument --log-level: invalid choice: 'loud'" in result.stderr


@pytest.fixture
def json_logging():
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("info", "json")
    yield
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_json_line_holds_the_exception_and_any_extra_value(json_logging, capsys) -> None:
    logger = logging.getLogger("nanostream.test")
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception(
            "lookup failed", extra={"node": "find", "counts": {"seen": object}, "key": "k1"}
        )
    record = json.loads(capsys.readouterr().err)
    assert record["message"] == "lookup failed"
    assert record["node"] == "find"
    assert record["counts"] == {"seen": "<class 'object'>"}
    assert record["key"] == "k1"
    assert record["exception"].endswith("KeyError: 'missing'")
    assert "pipeline" not in record


def test_configure_logging_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="log format must be one of plain, json, not 'xml'"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match="log level must be one of"):
        configure_logging("loud", "plain")
