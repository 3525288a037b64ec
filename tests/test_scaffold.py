"""``nanostream init``: new pipeline folders that pass check and their own tests."""

from __future__ import annotations

import json
import sys

import pytest

from nanostream._pipeline_tests import TESTS_SCHEMA
from nanostream._scaffold import TEMPLATES, pipeline_name
from nanostream.cli import main
from nanostream.config._schema import pipeline_schema


@pytest.fixture(autouse=True)
def fresh_modules():
    """Each scaffold has a module named ``nodes``: forget the last one's."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


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
        f"pipeline_name: my_{template}_pipeline\n"
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
    assert out.splitlines()[-1] == "3 passed, 0 failed"


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
