"""``nanostream graph``: every format, and live counters read from a real HTTP server."""

from __future__ import annotations

import html.parser
import http.server
import itertools
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from nanostream import cli
from nanostream.observe._diagram import DiagramError, parse_counters

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's `dot` program is not installed"
)

# A fan-out, an edge that skips a column (numbers -> count), and a dead-letter
# node with no parents of its own.
PIPELINE = textwrap.dedent("""\
    pipeline_name: diagram_demo
    node_sequence:
      - name: numbers
        class: SequenceEmitter
        sequence: [1, 2, 3]
      - name: show
        class: PrintStreamProcessor
        prefix: "n="
        parents: [numbers]
      - name: store
        class: BlackHole
        parents: [show]
        on_error: skip
        dead_letter: rejects
      - name: count
        class: BlackHole
        parents: [numbers, show]
      - name: rejects
        class: BlackHole
    """)
NODES = {"numbers", "show", "store", "count", "rejects"}
EDGES = {"numbers->show", "show->store", "store->rejects", "numbers->count", "show->count"}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


@pytest.fixture
def no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH on which there is no ``dot``."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def graph(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    """Run ``nanostream graph ARGS``: exit status, stdout bytes, stderr text."""
    status = cli.main(["graph", *args])
    captured = capsysbinary.readouterr()
    return status, captured.out, captured.err.decode()


class Drawing(html.parser.HTMLParser):
    """The nodes and edges of an SVG drawing in a page, by their ``<title>``s,
    and everything the page would load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, str] = {}
        self.edges: set[str] = set()
        self.external: list[tuple[str, str]] = []
        self.meta_refresh: str | None = None
        self._group: str | None = None
        self._title: str | None = None
        self._in_title = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" or attributes.get("src") or tag == "link":
            self.external.append((tag, attributes.get("src") or attributes.get("href") or ""))
        if tag == "meta" and attributes.get("http-equiv") == "refresh":
            self.meta_refresh = attributes.get("content")
        if tag == "g" and attributes.get("class") in ("node", "edge"):
            self._group, self._title, self._text = attributes["class"], None, []
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False
        if tag == "g" and self._group is not None:
            if self._group == "node":
                self.nodes[self._title or ""] = " | ".join(self._text)
            else:
                self.edges.add(self._title or "")
            self._group = None

    def handle_data(self, data: str) -> None:
        if self._group is None or not data.strip():
            return
        if self._in_title:
            self._title = data
        else:
            self._text.append(data.strip())


def parse_page(page: bytes) -> Drawing:
    drawing = Drawing()
    drawing.feed(page.decode("utf-8"))
    drawing.close()
    return drawing


def test_mermaid(config: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = graph(capsysbinary, str(config))
    assert status == 0
    assert out.decode() == textwrap.dedent("""\
        flowchart LR
            numbers["numbers<br/>SequenceEmitter"]
            show["show<br/>PrintStreamProcessor"]
            store["store<br/>BlackHole"]
            count["count<br/>BlackHole"]
            rejects["rejects<br/>BlackHole"]
            numbers --> show
            show --> store
            store -. dead letters .-> rejects
            numbers --> count
            show --> count
        """)


def test_mermaid_ids_stay_distinct_and_labels_quoted(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "names.yaml"
    path.write_text(
        textwrap.dedent("""\
        pipeline_name: names
        node_sequence:
          - name: a-b
            class: SequenceEmitter
            sequence: [1]
          - name: a_b
            class: PrintStreamProcessor
            parents: [a-b]
          - name: 'say "hi"'
            class: BlackHole
            parents: [a_b]
        """)
    )
    status, out, _ = graph(capsysbinary, str(path))
    assert status == 0
    assert out.decode().splitlines()[1:] == [
        '    a_b["a-b<br/>SequenceEmitter"]',
        '    a_b_2["a_b<br/>PrintStreamProcessor"]',
        '    say__hi_["say #quot;hi#quot;<br/>BlackHole"]',
        "    a_b --> a_b_2",
        "    a_b_2 == chained ==> say__hi_",
    ]
    status, out, _ = graph(capsysbinary, str(path), "--format", "dot")
    assert '    "say \\"hi\\"" [shape=box, label="say \\"hi\\"\\nBlackHole"];' in out.decode()


def test_dot(config: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = graph(capsysbinary, str(config), "--format", "dot")
    assert status == 0
    assert out.decode() == textwrap.dedent("""\
        digraph "diagram_demo" {
            rankdir=LR;
            "numbers" [shape=box, label="numbers\\nSequenceEmitter"];
            "show" [shape=box, label="show\\nPrintStreamProcessor"];
            "store" [shape=box, label="store\\nBlackHole"];
            "count" [shape=box, label="count\\nBlackHole"];
            "rejects" [shape=box, label="rejects\\nBlackHole"];
            "numbers" -> "show";
            "show" -> "store";
            "store" -> "rejects" [style=dashed, label="dead letters"];
            "numbers" -> "count";
            "show" -> "count";
        }
        """)


def draw_to_file(capsysbinary: pytest.CaptureFixture[bytes], config: Path, format: str) -> bytes:
    """``nanostream graph --format FORMAT -o FILE``: what it wrote to FILE."""
    output = config.with_suffix(f".{format}")
    status, out, err = graph(capsysbinary, str(config), "--format", format, "-o", str(output))
    assert (status, out) == (0, b""), err
    return output.read_bytes()


@needs_graphviz
def test_svg_names_every_node_and_edge(
    config: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    svg = ET.fromstring(draw_to_file(capsysbinary, config, "svg"))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = {
        kind: {g.find("svg:title", ns).text for g in svg.iterfind(f".//svg:g[@class='{kind}']", ns)}
        for kind in ("node", "edge")
    }
    assert groups == {"node": NODES, "edge": EDGES}
    texts = [text.text for text in svg.iterfind(".//svg:text", ns)]
    assert "PrintStreamProcessor" in texts
    assert "dead letters" in texts


@needs_graphviz
def test_png_to_a_file_or_stdout(config: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    written = draw_to_file(capsysbinary, config, "png")
    assert written.startswith(b"\x89PNG\r\n\x1a\n")
    status, out, err = graph(capsysbinary, str(config), "--format", "png")
    assert status == 0, err
    assert out == written


def test_an_output_file_that_cannot_be_written_is_a_clear_error(
    config: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    output = tmp_path / "missing" / "pipeline.html"
    status, out, err = graph(capsysbinary, str(config), "--format", "html", "-o", str(output))
    assert (status, out) == (1, b"")
    assert err.startswith(f"nanostream: cannot write {output}: [Errno 2] No such file")


@needs_graphviz
def test_html_inlines_graphvizs_svg(
    config: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, _ = graph(capsysbinary, str(config), "--format", "html")
    assert status == 0
    page = parse_page(out)
    assert set(page.nodes) == NODES
    assert page.edges == EDGES
    assert page.external == []
    assert b'class="graph"' in out  # drawn by Graphviz
    assert page.meta_refresh is None


def test_html_without_graphviz_lays_out_columns_by_depth(
    config: Path, no_graphviz: None, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, _ = graph(capsysbinary, str(config), "--format", "html")
    assert status == 0
    page = parse_page(out)
    assert page.nodes == {
        "numbers": "numbers | SequenceEmitter",
        "show": "show | PrintStreamProcessor",
        "store": "store | BlackHole",
        "count": "count | BlackHole",
        "rejects": "rejects | BlackHole",
    }
    assert page.edges == EDGES
    assert page.external == []
    svg = ET.fromstring(out[out.index(b"<svg") : out.index(b"</svg>") + 6])
    ns = {"svg": "http://www.w3.org/2000/svg"}
    corners = {
        g.find("svg:title", ns).text: (
            float(g.find("svg:rect", ns).get("x")),
            float(g.find("svg:rect", ns).get("y")),
        )
        for g in svg.iterfind(".//svg:g[@class='node']", ns)
    }
    lefts = sorted({x for x, _ in corners.values()})
    # A node's column is the longest path to it: count is after show, which
    # numbers also feeds; rejects is after store, whose dead letters it takes.
    assert {name: lefts.index(x) for name, (x, _) in corners.items()} == {
        "numbers": 0,
        "show": 1,
        "store": 2,
        "count": 2,
        "rejects": 3,
    }
    assert corners["store"][1] < corners["count"][1]

    boxes = [
        tuple(float(rect.get(key)) for key in ("x", "y", "width", "height"))
        for rect in svg.iterfind(".//svg:rect", ns)
    ]
    for path in svg.iterfind(".//svg:g[@class='edge']/svg:path", ns):
        points = [
            tuple(map(float, pair.split(",")))
            for pair in re.findall(r"[\d.]+,[\d.]+", path.get("d"))
        ]
        for (x1, y1), (x2, y2) in itertools.pairwise(points):
            for step in range(101):
                x, y = x1 + (x2 - x1) * step / 100, y1 + (y2 - y1) * step / 100
                assert not any(
                    left < x < left + width and top < y < top + height
                    for left, top, width, height in boxes
                ), f"edge {path.get('d')} crosses a box at {x}, {y}"


@pytest.mark.parametrize("format", ["svg", "png"])
def test_graphviz_formats_without_graphviz_say_what_to_do(
    config: Path, no_graphviz: None, capsysbinary: pytest.CaptureFixture[bytes], format: str
) -> None:
    status, out, err = graph(capsysbinary, str(config), "--format", format)
    assert (status, out) == (1, b"")
    assert f"--format {format} needs Graphviz's `dot` program" in err
    assert "install Graphviz" in err
    assert "--format mermaid or --format html" in err


class MetricsServer:
    """A Prometheus endpoint on loopback, serving a registry as ``/metrics``.

    ``served`` counts the requests answered, so a test can wait for the
    command to come back for more.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.served = 0
        self.changed = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = generate_latest(server.registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with server.changed:
                    server.served += 1
                    server.changed.notify_all()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/metrics"

    def wait_for_requests(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.served >= count, timeout=60)


class PipelineMetrics:
    """The metrics ``nanostream run --metrics-port`` serves, set by hand."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["pipeline", "node"]

        def counter(name: str) -> Counter:
            return Counter(name, name, labels, registry=self.registry)

        def gauge(name: str) -> Gauge:
            return Gauge(name, name, labels, registry=self.registry)

        self.received = counter("nanostream_items_received_total")
        self.emitted = counter("nanostream_items_emitted_total")
        self.skipped = counter("nanostream_items_skipped_total")
        self.errors = counter("nanostream_errors_total")
        self.queue_depth = gauge("nanostream_queue_depth")
        self.queue_capacity = gauge("nanostream_queue_capacity")
        self.running = gauge("nanostream_node_running")

    def set_node(self, pipeline: str, node: str, **values: float) -> None:
        for name, value in values.items():
            metric = getattr(self, name).labels(pipeline=pipeline, node=node)
            if isinstance(metric, Gauge):
                metric.set(value)
            else:
                metric.inc(value)


@pytest.fixture
def metrics() -> PipelineMetrics:
    metrics = PipelineMetrics()
    pipeline = "diagram_demo"
    metrics.set_node(pipeline, "numbers", emitted=3, queue_capacity=0, running=0)
    metrics.set_node(
        pipeline, "show", received=3, emitted=3, queue_depth=1, queue_capacity=8, running=1
    )
    metrics.set_node(
        pipeline,
        "store",
        received=3,
        skipped=2,
        errors=2,
        queue_depth=0,
        queue_capacity=8,
        running=1,
    )
    # Another pipeline in the same process: its numbers must not leak in.
    metrics.set_node("other", "show", received=99, emitted=99)
    return metrics


@pytest.fixture
def metrics_server(metrics: PipelineMetrics) -> Iterator[MetricsServer]:
    server = MetricsServer(metrics.registry)
    thread = threading.Thread(target=server.http.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server
    finally:
        server.http.shutdown()
        thread.join()
        server.http.server_close()


def test_live_counters_label_their_nodes(
    config: Path, metrics_server: MetricsServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, out, err = graph(capsysbinary, str(config), "--metrics", metrics_server.url)
    assert status == 0, err
    assert out.decode().splitlines()[1:6] == [
        '    numbers["numbers<br/>SequenceEmitter<br/>out 3<br/>stopped"]',
        '    show["show<br/>PrintStreamProcessor<br/>in 3, out 3, queue 1/8<br/>running"]',
        '    store["store<br/>BlackHole<br/>in 3, queue 0/8<br/>skipped 2, errors 2, running"]',
        '    count["count<br/>BlackHole"]',
        '    rejects["rejects<br/>BlackHole"]',
    ]
    status, out, err = graph(
        capsysbinary, str(config), "--format", "dot", "--metrics", metrics_server.url
    )
    assert status == 0, err
    assert (
        '    "show" [shape=box, label="show\\nPrintStreamProcessor\\n'
        'in 3, out 3, queue 1/8\\nrunning"];' in out.decode()
    )


def test_live_counters_in_the_page_without_graphviz(
    config: Path,
    metrics_server: MetricsServer,
    no_graphviz: None,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, err = graph(
        capsysbinary, str(config), "--format", "html", "--metrics", metrics_server.url
    )
    assert status == 0, err
    assert parse_page(out).nodes == {
        "numbers": "numbers | SequenceEmitter | out 3 | stopped",
        "show": "show | PrintStreamProcessor | in 3, out 3, queue 1/8 | running",
        "store": "store | BlackHole | in 3, queue 0/8 | skipped 2, errors 2, running",
        "count": "count | BlackHole",
        "rejects": "rejects | BlackHole",
    }


def test_metrics_of_another_pipeline_are_refused(
    tmp_path: Path, metrics_server: MetricsServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "renamed.yaml"
    path.write_text(PIPELINE.replace("diagram_demo", "renamed"))
    status, out, err = graph(capsysbinary, str(path), "--metrics", metrics_server.url)
    assert (status, out) == (1, b"")
    assert err == (
        f"nanostream: {metrics_server.url}: no metrics for pipeline 'renamed' "
        "(found 'diagram_demo', 'other')\n"
    )


def test_unreachable_or_wrong_metrics_urls_are_clear_errors(
    config: Path, metrics_server: MetricsServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/metrics"
    status, out, err = graph(capsysbinary, str(config), "--metrics", url)
    assert (status, out) == (1, b"")
    assert err.startswith(f"nanostream: cannot read metrics from {url}: ")
    assert "Connection refused" in err
    assert "is `nanostream run --metrics-port` running there?" in err

    not_found = metrics_server.url.replace("/metrics", "/nothing")
    status, _, err = graph(capsysbinary, str(config), "--metrics", not_found)
    assert status == 1
    assert f"cannot read metrics from {not_found}: Not Found" in err


def test_refresh_rewrites_the_page_with_fresh_counters(
    config: Path, tmp_path: Path, metrics: PipelineMetrics, metrics_server: MetricsServer
) -> None:
    page = tmp_path / "page.html"
    command = [sys.executable, "-m", "nanostream", "graph", str(config), "--format", "html"]
    command += ["--metrics", metrics_server.url, "-o", str(page), "--refresh", "0.05"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        # A page is written before the next scrape begins.
        metrics_server.wait_for_requests(2)
        drawing = parse_page(page.read_bytes())
        assert drawing.meta_refresh == "0.05"
        assert "in 3, out 3, queue 1/8" in drawing.nodes["show"]
        metrics.set_node("diagram_demo", "show", received=4, emitted=4, queue_depth=5)
        # One scrape may have read the old numbers before they changed; the one
        # after it reads the new ones, and its page is written before the next.
        metrics_server.wait_for_requests(metrics_server.served + 3)
        assert "in 7, out 7, queue 5/8" in parse_page(page.read_bytes()).nodes["show"]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_metrics_url_must_be_http(
    config: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, _, err = graph(capsysbinary, str(config), "--metrics", "127.0.0.1:9100/metrics")
    assert status == 1
    assert err == (
        "nanostream: metrics URL '127.0.0.1:9100/metrics' is not http:// or https:// "
        "(for example http://127.0.0.1:9100/metrics)\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>hello</html>\n", "where: not Prometheus text format: invalid metric name"),
        ("process_cpu_seconds_total 1.5\n", "where: no nanostream metrics"),
    ],
)
def test_metrics_that_are_not_a_nanostream_runs_are_refused(text: str, message: str) -> None:
    with pytest.raises(DiagramError) as caught:
        parse_counters(text, "diagram_demo", source="where")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "extra",
    [
        ["--refresh", "1"],
        ["--refresh", "1", "--metrics", "http://127.0.0.1:9/metrics"],
        ["--refresh", "0", "--metrics", "http://127.0.0.1:9/metrics", "-o", "page.html"],
    ],
)
def test_refresh_needs_html_metrics_and_a_file(
    config: Path, capsysbinary: pytest.CaptureFixture[bytes], extra: list[str]
) -> None:
    status, _, err = graph(capsysbinary, str(config), "--format", "html", *extra)
    assert status == 2
    assert "--refresh needs a positive number of seconds" in err


def test_chained_nodes_are_drawn_with_a_chained_edge(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text(
        textwrap.dedent("""\
        pipeline_name: chain
        node_sequence:
          - {name: numbers, class: SequenceEmitter, sequence: [1]}
          - {name: a, class: PrintStreamProcessor, parents: [numbers]}
          - {name: b, class: PrintStreamProcessor, parents: [a]}
          - {name: c, class: PrintStreamProcessor, parents: [b], chain: false}
          - {name: d, class: BlackHole, parents: [c]}
        """)
    )
    status, out, _ = graph(capsysbinary, str(path))
    assert status == 0
    assert out.decode().splitlines()[-4:] == [
        "    numbers --> a",
        "    a == chained ==> b",
        "    b --> c",
        "    c --> d",
    ]
    status, out, _ = graph(capsysbinary, str(path), "--format", "dot")
    assert '    "a" -> "b" [style=bold, label="chained"];' in out.decode()
    assert '    "c" -> "d";' in out.decode()
