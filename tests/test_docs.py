"""The pipelines shown in the documentation are valid."""

import re
from pathlib import Path

import pytest

from nanostream.config import check_text

DOCS = Path(__file__).parent.parent / "docs"
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def yaml_blocks(name: str) -> list[str]:
    return YAML_BLOCK.findall((DOCS / name).read_text())


@pytest.mark.parametrize("number", range(len(yaml_blocks("nodes.md"))))
def test_every_pipeline_in_the_nodes_guide_passes_check(number):
    text = yaml_blocks("nodes.md")[number]
    assert [error.format() for error in check_text(text, f"nodes.md block {number + 1}")] == []


def test_the_nodes_guide_shows_every_node_it_describes():
    text = "".join(yaml_blocks("nodes.md"))
    for node in ("CsvParser", "Filter", "Map", "Throttle", "Sampler"):
        assert f"class: {node}" in text


@pytest.mark.parametrize("number", range(len(yaml_blocks("connectors.md"))))
def test_every_pipeline_in_the_connectors_guide_passes_check(number, monkeypatch):
    # The secrets the guide reads from the environment, as a user would set them.
    for variable in ("WEBHOOK_TOKEN", "API_TOKEN", "DATABASE_URL"):
        monkeypatch.setenv(variable, "sqlite:///x.db" if variable == "DATABASE_URL" else "t")
    text = yaml_blocks("connectors.md")[number]
    assert [error.format() for error in check_text(text, f"connectors.md block {number + 1}")] == []
