"""``nanostream init``: new pipeline folders that pass check and their own tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from nanostream._imports import forget_modules
from nanostream._pipeline_tests import TESTS_SCHEMA
from nanostream._scaffold import TEMPLATES, pipeline_name
from nanostream.cli import main
from nanostream.config._schema import pipeline_schema


@pytest.fixture(autouse=True)
def fresh_modules(tmp_path):
    """Each scaffold has a module named ``nodes``: forget the last one's."""
    yield
    forget_modules(tmp_path)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_new_pipeline_passes_check_and_its_own_tests(template, tmp_path, capsys, monkeypatch):
    folder = tmp_path / f"my-{template}-pipeline"
    assert main(["init", str(folder), "--template", template]) == 0
    out = capsys.readouterr().out
    assert f"wrote {folder / 'pipeline.yaml'}" in out
    assert {"README.md", "nodes.py", "pipeline.test.yaml", "pipeline.yaml", "schemas"} <= {
        p.name for p in folder.iterdir()
    }
    pipeline = (folder / "pipeline.yaml").read_text()
    assert pipeline.startswith(
        "# yaml-language-server: $schema=schemas/nanostream.schema.json\n"
        f"pipeline_name: {pipeline_name(folder)}\n"
    )
    assert json.loads((folder / "schemas" / "nanostream.schema.json").read_text()) == (
        pipeline_schema()
    )
    assert json.loads((folder / "schemas" / "nanostream-tests.schema.json").read_text()) == (
        TESTS_SCHEMA
    )
    monkeypatch.chdir(folder)
    assert main(["check", "pipeline.yaml"]) == 0
    assert main(["test"]) == 0
    if template == "files":
        assert (folder / "inbox").is_dir()
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith(" passed, 0 failed")
    assert "FAIL" not in out


def test_a_new_pipelines_tests_fail_when_its_node_breaks(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "breaks"
    assert main(["init", str(folder)]) == 0
    nodes = folder / "nodes.py"
    nodes.write_text(nodes.read_text().replace(".upper()", ".lower()"))
    monkeypatch.chdir(folder)
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert '-{"data": "HELLO, WORLD\\n", "index": null, "path": "samples/hello.txt"}' in out


def test_one_run_tests_folders_whose_modules_share_names(tmp_path, capsys):
    for template in sorted(TEMPLATES):
        assert main(["init", str(tmp_path / template), "--template", template]) == 0
    assert main(["test", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "5 passed, 0 failed"


def test_init_never_writes_into_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["init", str(tmp_path)]) == 1
    assert "is not an empty folder; nothing written" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_init_fills_an_empty_folder(tmp_path, capsys):
    assert main(["init", str(tmp_path), "--template", "kafka"]) == 0
    assert (tmp_path / "pipeline.yaml").exists()


def test_an_unknown_template_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["init", str(tmp_path / "x"), "--template", "ftp"])
    assert exit.value.code == 2
    assert "invalid choice: 'ftp'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_pipeline_names_come_from_the_folder():
    assert pipeline_name("some/Where/My Orders-2") == "my_orders_2"
    assert pipeline_name("---") == "pipeline"


def test_the_http_sql_pipeline_runs_as_made(tmp_path):
    folder = tmp_path / "events"
    assert main(["init", str(folder), "--template", "http-sql"]) == 0
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nanostream", "run", "--log-level", "info", "pipeline.yaml"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PORT": "0", "WEBHOOK_TOKEN": "s3cret"},
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"serving POST /events on (http://\S+)", log.read_text())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        url = found.group(1) + "/events"
        token = {"Authorization": "Bearer s3cret"}
        assert httpx.post(url, json={"id": 7, "type": "signup"}, headers=token).status_code == 200
        assert httpx.post(url, json={"type": "no id"}, headers=token).status_code == 200
        assert httpx.post(url, json={"id": 8}).status_code == 401
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with contextlib.closing(sqlite3.connect(folder / "events.db")) as database:
        rows = database.execute("SELECT event_id, kind, payload FROM events").fetchall()
    assert rows == [("7", "signup", '{"id": 7, "type": "signup"}')]
    [rejected] = [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]
    assert rejected == {"node": "transform", "error": "KeyError: 'id'", "item": {"type": "no id"}}
