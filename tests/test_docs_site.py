"""The documentation site builds without a warning, with its generated references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return out


def test_every_page_is_built(site):
    sources = {
        p.relative_to(DOCS).with_suffix("")
        for p in list(DOCS.rglob("*.md"))
        if p.relative_to(DOCS).parts[0] != "_build"
    }
    built = {p.relative_to(site).with_suffix("") for p in list(site.rglob("*.html"))}
    assert sources <= built
    assert (site / "searchindex.js").exists()


def test_the_cli_reference_comes_from_the_parser(site):
    page = (site / "cli.html").read_text()
    for text in ("--watch", "--drain-timeout", "--template", "--schema", "run the test cases"):
        assert text in page, text


def test_the_api_reference_comes_from_the_docstrings(site):
    page = (site / "api.html").read_text()
    for name in ("testing.run_pipeline", "NanoStreamGraph", "GraphRun", "config.load_pipeline"):
        assert f'id="nanostream.{name}"' in page, name
    assert "Run a pipeline to the end and return what every node emitted." in page


def test_the_node_reference_and_the_test_format_are_included(site):
    assert 'id="filewriter"' in (site / "reference.html").read_text()
    assert "nanostream-tests.schema.json" in (site / "test-files.html").read_text()
