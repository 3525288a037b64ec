"""``nanostream test``: YAML test cases beside a pipeline."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest

from nanostream._pipeline_tests import TESTS_SCHEMA, schema_text
from nanostream.cli import main

ROOT = Path(__file__).parent.parent

PIPELINE = """\
pipeline_name: orders
node_sequence:
  - name: orders
    class: KafkaConsumer
    topics: [orders]
  - name: total
    class: order_steps:Total
    parents: [orders]
    on_error: skip
    dead_letter: rejected
  - name: publish
    class: KafkaProducer
    topic: totals
    parents: [total]
  - name: rejected
    class: BlackHole
"""

STEPS = """\
from nanostream import NanoStreamProcessor

class Total(NanoStreamProcessor):
    def process_item(self, message):
        return {"order": message["order"], "total": message["price"] * message["quantity"]}
"""

PASSING = """\
replace: [publish, rejected]
cases:
  - name: totals each order
    inputs:
      orders:
        - {order: a, price: 2, quantity: 3}
        - {order: b, price: 1.5, quantity: 2}
    expect:
      total:
        - {order: a, total: 6}
        - {order: b, total: 3.0}
      publish:
        length: 2
        contains: [{order: b, total: 3}]
        json_schema:
          type: object
          required: [order, total]
  - name: an order without a price is dead-lettered
    inputs:
      orders: [{order: c, quantity: 1}]
    expect:
      total: []
      rejected:
        unordered:
          - {node: total, item: {order: c, quantity: 1}, error: "KeyError: 'price'"}
  - name: a middle node takes inputs of its own
    inputs:
      publish: [{any: thing}]
    expect:
      publish: [{any: thing}]
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "order_steps.py").write_text(STEPS)
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["test", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_passing_cases_exit_0_and_name_each_case(project, capsys):
    (project / "pipeline.test.yaml").write_text(PASSING)
    status, out, _ = run_cli(capsys, str(project))
    test_file = project / "pipeline.test.yaml"
    assert out.splitlines() == [
        f"PASS {test_file}:3: totals each order",
        f"PASS {test_file}:18: an order without a price is dead-lettered",
        f"PASS {test_file}:26: a middle node takes inputs of its own",
        "3 passed, 0 failed",
    ]
    assert status == 0


def test_k_runs_the_cases_whose_name_contains_the_text(project, capsys):
    (project / "pipeline.test.yaml").write_text(PASSING)
    status, out, _ = run_cli(capsys, "-k", "order")
    assert status == 0
    assert [line.split(": ", 1)[1] for line in out.splitlines()[:-1]] == [
        "totals each order",
        "an order without a price is dead-lettered",
    ]
    assert out.splitlines()[-1] == "2 passed, 0 failed"


def test_a_pipeline_file_stands_for_its_test_file(project, capsys):
    (project / "pipeline.test.yaml").write_text(PASSING)
    status, out, _ = run_cli(capsys, str(project / "pipeline.yaml"))
    assert (status, out.splitlines()[-1]) == (0, "3 passed, 0 failed")
    (project / "other.yaml").write_text(PIPELINE)
    status, _, err = run_cli(capsys, str(project / "other.yaml"))
    assert status == 2
    assert "no test file other.test.yaml beside it" in err


def test_a_failing_case_shows_a_diff_and_exits_1(project, capsys):
    failing = PASSING.replace("{order: b, total: 3.0}", "{order: b, total: 4}").replace(
        "length: 2", "length: 3"
    )
    (project / "pipeline.test.yaml").write_text(failing)
    status, out, _ = run_cli(capsys)  # the current folder is searched
    assert status == 1
    report = out.split("FAIL ", 1)[1].split("PASS")[0]
    assert report == textwrap.dedent("""\
        pipeline.test.yaml:3: totals each order
            node 'total': emitted other items than expected
                --- expected
                +++ emitted
                @@ -1,2 +1,2 @@
                 {"order": "a", "total": 6}
                -{"order": "b", "total": 4}
                +{"order": "b", "total": 3.0}
            node 'publish': emitted 2 items, expected 3
        """)
    assert out.splitlines()[-1] == "2 passed, 1 failed"


@pytest.fixture(autouse=True)
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)


def test_a_junit_xml_report_for_ci_servers(project, capsys):
    failing = PASSING.replace("{order: b, total: 3.0}", "{order: b, total: 4}")
    (project / "pipeline.test.yaml").write_text(failing)
    (project / "other.yaml").write_text(PIPELINE)
    (project / "other.test.yaml").write_text("cases: []\n")
    status, _, _ = run_cli(capsys, "--junit-xml", "report.xml")
    assert status == 1
    root = ElementTree.parse(project / "report.xml").getroot()
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert sorted(suites) == ["other.test.yaml", "pipeline.test.yaml"]
    suite = suites["pipeline.test.yaml"]
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == [
        "totals each order",
        "an order without a price is dead-lettered",
        "a middle node takes inputs of its own",
    ]
    [failure] = cases["totals each order"].findall("failure")
    assert failure.get("message") == "node 'total': emitted other items than expected"
    assert '-{"order": "b", "total": 4}' in failure.text
    assert cases["totals each order"].get("line") == "3"
    assert not cases["a middle node takes inputs of its own"].findall("failure")
    [error] = suites["other.test.yaml"].iter("error")
    assert "cases: [] should be non-empty" in error.text


def test_conditions_report_what_is_missing_and_what_does_not_match(project, capsys):
    (project / "pipeline.test.yaml").write_text("""\
cases:
  - name: conditions
    replace: [publish]
    inputs:
      orders: [{order: a, price: 2, quantity: 3}]
    expect:
      publish:
        contains: [{order: z, total: 1}]
        unordered: []
        json_schema: {properties: {total: {maximum: 5}}}
""")
    status, out, _ = run_cli(capsys)
    assert status == 1
    assert out.splitlines()[1:] == [
        "    node 'publish': emitted other items than expected, in any order",
        "        --- expected",
        "        +++ emitted",
        "        @@ -0,0 +1 @@",
        '        +{"order": "a", "total": 6}',
        '    node \'publish\': did not emit {"order": "z", "total": 1}; it emitted 1 items:',
        '        {"order": "a", "total": 6}',
        "    node 'publish': item 0 does not match the JSON Schema: ['total'] "
        "6 is greater than the maximum of 5",
        '        {"order": "a", "total": 6}',
        "0 passed, 1 failed",
    ]


def test_env_sets_the_variables_the_pipeline_reads(project, capsys, monkeypatch):
    monkeypatch.delenv("ORDERS_TOPIC", raising=False)
    monkeypatch.setenv("TOTALS_TOPIC", "kept")
    (project / "pipeline.yaml").write_text(
        PIPELINE.replace("topics: [orders]", "topics: ['${ORDERS_TOPIC}']").replace(
            "topic: totals", "topic: ${TOTALS_TOPIC}"
        )
    )
    test = "replace: [publish]\ncases: [{name: a, expect: {total: []}}]\n"
    (project / "pipeline.test.yaml").write_text(test)
    status, _, err = run_cli(capsys)
    assert status == 1
    assert "environment variable 'ORDERS_TOPIC' is not set" in err
    (project / "pipeline.test.yaml").write_text(
        "env: {ORDERS_TOPIC: from-the-test, TOTALS_TOPIC: totals-2}\n" + test
    )
    status, out, err = run_cli(capsys)
    assert (status, out.splitlines()[-1]) == (0, "1 passed, 0 failed"), err
    # what was there before is back
    assert "ORDERS_TOPIC" not in os.environ
    assert os.environ["TOTALS_TOPIC"] == "kept"


def test_a_node_error_fails_the_case_with_the_error(project, capsys):
    failing = PIPELINE.replace("    on_error: skip\n    dead_letter: rejected\n", "")
    (project / "pipeline.yaml").write_text(failing.split("  - name: rejected")[0])
    (project / "pipeline.test.yaml").write_text("""\
replace: [publish]
cases:
  - name: a string price
    inputs:
      total: [{order: a, price: "2", quantity: 1.5}]
    expect:
      publish: []
""")
    status, out, _ = run_cli(capsys)
    assert status == 1
    assert "the pipeline failed: node 'total' failed in process_item: TypeError" in out


def test_a_case_that_does_not_finish_times_out(project, capsys):
    (project / "stall.py").write_text(
        "import trio\nfrom nanostream import NanoStreamProcessor\n\n"
        "class Stall(NanoStreamProcessor):\n"
        "    async def process_item(self, message):\n"
        "        await trio.sleep_forever()\n"
    )
    (project / "slow.yaml").write_text(
        "node_sequence:\n  - {name: numbers, class: SequenceEmitter}\n"
        "  - {name: stall, class: 'stall:Stall', parents: [numbers]}\n"
    )
    (project / "slow.test.yaml").write_text(
        "timeout: 0.2\ncases:\n"
        "  - {name: stalls, inputs: {numbers: [1]}, expect: {stall: [1]}}\n"
        "  - {name: no input, expect: {stall: []}}\n"
    )
    status, out, _ = run_cli(capsys, "slow.test.yaml")
    assert out.splitlines() == [
        "FAIL slow.test.yaml:3: stalls",
        "    did not finish within 0.2s (the file's 'timeout')",
        "PASS slow.test.yaml:4: no input",
        "1 passed, 1 failed",
    ]
    assert status == 1


TYPOS = """\
replace: [pubish]
cases:
  - name: typos
    inputs:
      ordres: [1]
    expect:
"""


def test_errors_in_a_test_file_are_reported_with_lines_and_exit_1(project, capsys):
    (project / "pipeline.test.yaml").write_text(
        TYPOS
        + "      total: {lenght: 1}\n"
        + "      publish: 3\n"
        + "    extra: true\n"
        + "  - name: bad schema\n"
        + "    expect:\n"
        + "      total: {json_schema: {type: 12}}\n"
    )
    status, out, err = run_cli(capsys)
    assert status == 1
    assert [line for line in err.splitlines() if ": error: " in line] == [
        "pipeline.test.yaml:3:5: error: cases.0: unknown key 'extra'",
        "pipeline.test.yaml:7:14: error: cases.0.expect.total: "
        "unknown key 'lenght' (did you mean 'length'?)",
        "pipeline.test.yaml:8:16: error: cases.0.expect.publish: "
        "expected a list of items, or conditions (equals, unordered, contains, length, "
        "json_schema)",
    ]
    assert out.splitlines() == ["0 passed, 0 failed, 1 test file with errors"]
    # once the schema is satisfied, node names are checked against the pipeline
    (project / "pipeline.test.yaml").write_text(TYPOS + "      total: {json_schema: {type: 12}}\n")
    status, _, err = run_cli(capsys)
    assert status == 1
    assert [line for line in err.splitlines() if ": error: " in line] == [
        "pipeline.test.yaml:1:11: error: no node named 'pubish' in pipeline 'orders' "
        "(did you mean 'publish'?)",
        "pipeline.test.yaml:5:7: error: no node named 'ordres' in pipeline 'orders' "
        "(did you mean 'orders'?)",
        "pipeline.test.yaml:7:35: error: not a JSON Schema: 12 is not valid under any of "
        "the given schemas",
    ]


def test_null_is_never_an_input_item(project, capsys):
    (project / "pipeline.test.yaml").write_text(
        "cases:\n  - name: a\n    inputs: {orders: [{order: a}, null]}\n    expect: {total: []}\n"
    )
    status, _, err = run_cli(capsys)
    assert status == 1
    assert err.splitlines()[0] == (
        "pipeline.test.yaml:3:35: error: cases.0.inputs.orders.1: "
        "null is never an item (a node returns None to send nothing)"
    )


def test_a_test_file_that_is_not_a_mapping(project, capsys):
    (project / "pipeline.test.yaml").write_text("- cases\n")
    status, _, err = run_cli(capsys)
    assert status == 1
    assert err.splitlines()[0] == (
        "pipeline.test.yaml:1:1: error: a test file is a mapping with 'cases' "
        "(and 'pipeline', 'replace', 'env', 'timeout')"
    )


def test_errors_in_the_pipeline_are_reported_as_check_does(project, capsys):
    (project / "pipeline.yaml").write_text(PIPELINE.replace("KafkaProducer", "KafkaProdcer"))
    (project / "pipeline.test.yaml").write_text(PASSING)
    status, _, err = run_cli(capsys)
    assert status == 1
    assert "pipeline.yaml:12:12: error: node 'publish': unknown class 'KafkaProdcer'" in err


def test_no_test_files_is_a_usage_error(tmp_path, capsys):
    status, _, err = run_cli(capsys, str(tmp_path / "empty"))
    assert status == 2
    (tmp_path / "empty").mkdir()
    status, _, err = run_cli(capsys, str(tmp_path / "empty"))
    assert status == 2
    assert "no test files (*.test.yaml)" in err


def test_the_test_file_schema_is_valid_and_checked_in(capsys):
    jsonschema.Draft202012Validator.check_schema(TESTS_SCHEMA)
    assert main(["test", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == TESTS_SCHEMA
    checked_in = ROOT / "schemas" / "nanostream-tests.schema.json"
    assert checked_in.read_text() == schema_text(), f"{checked_in} is stale: run `just schema`"


def test_the_schema_accepts_the_documented_example():
    validator = jsonschema.Draft202012Validator(TESTS_SCHEMA)
    from ruamel.yaml import YAML

    assert list(validator.iter_errors(YAML(typ="safe").load(PASSING))) == []


def test_the_examples_pass_their_tests(capsys):
    assert main(["test", str(ROOT / "examples")]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.splitlines()[-1] == "4 passed, 0 failed"
