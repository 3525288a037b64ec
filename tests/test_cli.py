"""The ``nanostream`` command, driven as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest

import nanostream
from nanostream.config._schema import schema_text

CONFIGS = Path(__file__).parent / "configs"

GOOD = textwrap.dedent("""\
    pipeline_name: cli_demo
    node_sequence:
      - name: src
        class: ConstantEmitter
        thing: ${NANOSTREAM_CLI_THING:-hello}
        max_loops: 3
      - name: printer
        class: PrintStreamProcessor
        prefix: "got "
        parents: [src]
      - name: sink
        class: BlackHole
        parents: [printer]
        on_error: skip
        dead_letter: bin
      - name: bin
        class: BlackHole
        parents: [src]
    """)


def nanostream_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-m", "nanostream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def start_nanostream_run(
    cwd: Path, config: str = "pipeline.yaml", env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``nanostream run CONFIG`` in ``cwd``, in the background, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", config],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_while_running(
    process: subprocess.Popen[str], predicate, what: str, timeout: float = 30
) -> None:
    """Poll until ``predicate()`` holds, for what ``process`` makes (files,
    say); fail if it exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(GOOD)
    return path


def test_run_a_good_pipeline(tmp_path: Path) -> None:
    result = nanostream_cmd("run", str(good_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "got hello\n" * 3


def test_run_a_pipeline_with_a_custom_class(tmp_path: Path) -> None:
    (tmp_path / "nanostream_cli_nodes.py").write_text(
        textwrap.dedent("""\
        import attrs
        from nanostream import NanoStreamProcessor

        @attrs.define
        class Shout(NanoStreamProcessor):
            def process_item(self, message):
                return message.upper()
        """)
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        GOOD.replace("class: PrintStreamProcessor", "class: nanostream_cli_nodes:Shout").replace(
            'prefix: "got "', ""
        )
    )
    config.write_text(
        config.read_text()
        + "  - name: out\n    class: PrintStreamProcessor\n    parents: [printer]\n"
    )
    result = nanostream_cmd("run", "pipeline.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HELLO\n" * 3


def test_run_refuses_a_broken_pipeline() -> None:
    result = nanostream_cmd("run", str(CONFIGS / "wrong_type.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "wrong_type.yaml:7:16: error: node 'src': parameter 'max_loops'" in result.stderr
    assert "wrong_type.yaml:8:12: error:" in result.stderr
    assert "2 errors" in result.stderr


def test_check(tmp_path: Path) -> None:
    good = good_config(tmp_path)
    ok = nanostream_cmd("check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{good}: ok\n"

    broken = nanostream_cmd("check", str(good), str(CONFIGS / "unknown_parameter.yaml"))
    assert broken.returncode == 1
    assert broken.stderr.splitlines()[:3] == [
        f"{CONFIGS / 'unknown_parameter.yaml'}:10:5: error: node 'copy': unknown parameter "
        "'prefx' for PrintStreamProcessor (did you mean 'prefix'?)",
        '        prefx: "> "',
        "        ^",
    ]


def test_check_every_corpus_file_fails() -> None:
    paths = sorted(str(path) for path in CONFIGS.glob("*.yaml"))
    result = nanostream_cmd("check", *paths)
    assert result.returncode == 1
    for path in paths:
        assert f"{path}:" in result.stderr


def test_schema_is_valid_and_written(tmp_path: Path) -> None:
    printed = nanostream_cmd("schema")
    assert printed.returncode == 0
    schema = json.loads(printed.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert printed.stdout == schema_text()
    out = tmp_path / "schema.json"
    written = nanostream_cmd("schema", "-o", str(out))
    assert written.returncode == 0
    assert out.read_text() == printed.stdout


def test_nodes_catalogue_lists_each_node_under_its_role() -> None:
    listing = nanostream_cmd("nodes")
    assert listing.returncode == 0
    assert "``" not in listing.stdout
    sections = dict.fromkeys(["Sources:", "Processors:", "Sinks:", "Embedding:", "Aliases:"])
    current = None
    for line in listing.stdout.splitlines():
        if line in sections:
            current, sections[line] = line, []
        elif current and line.startswith("  ") and not line.startswith("   "):
            sections[current].append(line.split()[0])
    assert "SequenceEmitter" in sections["Sources:"]
    assert {"Map", "Filter", "Batcher"} <= set(sections["Processors:"])
    assert {"BlackHole", "FileWriter"} <= set(sections["Sinks:"])
    assert {"ChannelSource", "ChannelSink"} <= set(sections["Embedding:"])
    assert sections["Aliases:"] == ["DirectoryListener"]
    # Long summaries wrap under their own column.
    assert re.search(
        r"^  ConstantEmitter +Emits the same thing again and again", listing.stdout, re.M
    )


def test_nodes_class_shows_description_parameters_runtime_keys_and_an_example() -> None:
    detail = nanostream_cmd("nodes", "Batcher")
    assert detail.returncode == 0
    text = detail.stdout
    assert text.startswith("Batcher (processor): nanostream.nodes.batching:Batcher\n")
    assert "``" not in text
    assert (
        "Parameters:\n  count: int (default 100)\n      How many items make a full list.\n" in text
    )
    keys = text.split("Runtime keys (every node takes them):\n")[1]
    assert keys.startswith("  on_error: Literal['fail', 'skip', 'retry'] (default \"fail\")")
    assert "Example:\n  - name: batcher\n    class: Batcher\n    parents: [<upstream node>]" in text
    constant = nanostream_cmd("nodes", "ConstantEmitter")
    assert "  max_loops: int | None (default null)" in constant.stdout
    assert "  delay: float (default 0.0)" in constant.stdout
    unknown = nanostream_cmd("nodes", "ConstantEmiter")
    assert unknown.returncode == 1
    assert "did you mean 'ConstantEmitter'?" in unknown.stderr


def test_nodes_describes_the_embedding_nodes() -> None:
    detail = nanostream_cmd("nodes", "ChannelSource")
    assert detail.returncode == 0, detail.stderr
    assert detail.stdout.startswith(
        "ChannelSource (source): nanostream.nodes.memory:ChannelSource\n"
    )
    assert 'graph.add("input", nanostream.ChannelSource(receive))' in detail.stdout
    assert "Example:" not in detail.stdout  # no YAML example: YAML cannot hold a channel


def test_nodes_imports_a_custom_class_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mynodes.py").write_text(
        textwrap.dedent("""\
        import attrs
        import nanostream as ns

        @attrs.define
        class Scale(ns.NanoStreamProcessor):
            \"\"\"Multiplies each number by ``factor``.\"\"\"
            factor: float = 2.0

            def process_item(self, message):
                return message * self.factor
        """)
    )
    detail = nanostream_cmd("nodes", "mynodes:Scale", cwd=tmp_path)
    assert detail.returncode == 0, detail.stderr
    assert detail.stdout.splitlines()[:3] == [
        "Scale (processor): mynodes:Scale",
        "",
        "Multiplies each number by factor.",
    ]
    assert "  factor: float (default 2.0)" in detail.stdout


def test_graph_formats(tmp_path: Path) -> None:
    config = good_config(tmp_path)
    mermaid = nanostream_cmd("graph", str(config))
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.splitlines()[0] == "flowchart LR"
    assert "    src --> printer" in mermaid.stdout
    assert "    sink -. dead letters .-> bin" in mermaid.stdout
    dot = nanostream_cmd("graph", str(config), "--format", "dot")
    assert dot.returncode == 0
    assert dot.stdout.startswith('digraph "cli_demo" {')
    assert '    "src" -> "printer";' in dot.stdout
    broken = nanostream_cmd("graph", str(CONFIGS / "cycle.yaml"))
    assert broken.returncode == 1


def test_version_help_and_usage_errors() -> None:
    version = nanostream_cmd("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"nanostream {nanostream.__version__}"
    assert nanostream_cmd("--help").returncode == 0
    bare = nanostream_cmd()
    assert bare.returncode == 0
    assert bare.stdout == nanostream_cmd("--help").stdout
    assert nanostream_cmd("explode").returncode == 2
    assert nanostream_cmd("graph", "x.yaml", "--format", "jpeg").returncode == 2


def test_run_drains_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "forever.yaml"
    config.write_text(
        textwrap.dedent("""\
            pipeline_name: forever
            node_sequence:
              - name: tick
                class: ConstantEmitter
                thing: tick
                delay: 0.01
              - name: print
                class: PrintStreamProcessor
                parents: [tick]
            """)
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first printed item shows the pipeline is running.
    assert process.stdout.readline() == "tick\n"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert set(stdout.splitlines()) <= {"tick"}


@pytest.mark.parametrize("command", ["nodes", "schema"])
def test_a_closed_pipe_is_not_an_error(command):
    """``nanostream nodes | head -1``: the reader has gone before the
    command writes (its end of the pipe is closed before the start)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with subprocess.Popen(
        [sys.executable, "-m", "nanostream", command], stdout=write_end, stderr=subprocess.PIPE
    ) as process:
        os.close(write_end)
        stderr = process.stderr.read()
    assert stderr == b""
    assert process.returncode == 0


def test_run_never_echoes_a_value_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "nanostream_cli_login.py").write_text(
        textwrap.dedent("""\
        import logging

        import attrs
        import nanostream as ns

        @attrs.define
        class Login(ns.NanoStreamProcessor):
            password: str = ""

            def setup(self):
                logging.getLogger("nanostream.login").warning("trying %s", self.password)
                raise PermissionError(f"wrong password {self.password!r}")

            def process_item(self, message):
                return message
        """)
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        pipeline_name: login
        node_sequence:
          - name: src
            class: SequenceEmitter
            sequence: [1]
          - name: login
            class: nanostream_cli_login:Login
            parents: [src]
            password: ${NANOSTREAM_CLI_PASSWORD}
        """)
    )
    env = {**os.environ, "NANOSTREAM_CLI_PASSWORD": "hunter22"}
    result = subprocess.run(
        [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    assert "hunter22" not in result.stderr + result.stdout
    assert "nanostream.login: trying ${NANOSTREAM_CLI_PASSWORD}" in result.stderr
    assert result.stderr.endswith(
        "nanostream: node 'login' failed in setup: PermissionError: wrong password "
        "${NANOSTREAM_CLI_PASSWORD} (value not shown)\n"
    )


def test_nodes_lists_the_nodes_of_installed_packages(tmp_path: Path) -> None:
    (tmp_path / "nanostream_cli_plugin.py").write_text(
        textwrap.dedent("""\
        import nanostream as ns

        class Shout(ns.NanoStreamProcessor):
            \"\"\"Upper-cases each item.\"\"\"

            def process_item(self, message):
                return message.upper()
        """)
    )
    # A distribution's metadata on the path, as pip would install it.
    info = tmp_path / "nanostream_cli_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nanostream-cli-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[nanostream.nodes]\nShout = nanostream_cli_plugin:Shout\nBroken = nowhere:Nothing\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listing = subprocess.run(
        [sys.executable, "-m", "nanostream", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert listing.returncode == 0, listing.stderr
    section = listing.stdout.split("From installed packages (entry points 'nanostream.nodes'):\n")
    words = " ".join(section[1].split())
    assert words.startswith(
        "Broken cannot load nowhere:Nothing: ModuleNotFoundError: No module named 'nowhere' "
        "Shout (processor) Upper-cases each item."
    )
