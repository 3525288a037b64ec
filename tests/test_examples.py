"""Every example runs and prints what it promises."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML

from nanostream.config import check_pipeline

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_python_quickstart_prints_even_squares():
    output = run(sys.executable, "quickstart.py")
    assert output.splitlines() == [
        *(f"even square: {n * n}" for n in range(0, 10, 2)),
        "done: 5 items printed",
    ]


def test_the_yaml_quickstart_prints_each_number():
    output = run(sys.executable, "-m", "nanostream", "run", "quickstart.yaml")
    assert output.splitlines() == [f"number: {n}" for n in range(1, 6)]


def test_every_yaml_example_passes_check_and_the_json_schema():
    schema = json.loads((EXAMPLES.parent / "schemas" / "nanostream.schema.json").read_text())
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        assert check_pipeline(path) == [], path
        jsonschema.validate(YAML(typ="safe").load(path.read_text()), schema)
