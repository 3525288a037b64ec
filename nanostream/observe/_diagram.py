"""Pictures of a pipeline: Mermaid, Graphviz dot, HTML, SVG and PNG.

Every format draws the same thing: one box per node (its name, its class
and, when given, its live counters) and one arrow per edge, dashed for dead
letters. SVG and PNG are Graphviz's rendering of the dot text, so they need
its ``dot`` program. The HTML page must open where there is no internet, so
it never loads a script: it inlines Graphviz's SVG when ``dot`` is
installed, and otherwise lays the nodes out itself, in columns by depth.

Live counters come from the Prometheus text that ``nanostream run
--metrics-port`` serves, read once per drawing.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import attrs
from prometheus_client.parser import text_string_to_metric_families

from .._graph import NanoStreamGraph, Node
from .._runtime._chaining import chained_parents

TEXT_FORMATS = ("mermaid", "dot", "html")
GRAPHVIZ_FORMATS = ("svg", "png")
FORMATS = TEXT_FORMATS + GRAPHVIZ_FORMATS

#: How long reading the metrics or running ``dot`` may take, in seconds.
TIMEOUT = 30.0

#: The Prometheus samples read, and the :class:`NodeCounters` field each fills.
METRICS = {
    "nanostream_items_received_total": "received",
    "nanostream_items_emitted_total": "emitted",
    "nanostream_items_skipped_total": "skipped",
    "nanostream_errors_total": "errors",
    "nanostream_queue_depth": "queued",
    "nanostream_queue_capacity": "queue_capacity",
    "nanostream_node_running": "running",
}


class DiagramError(Exception):
    """A picture that cannot be made; the message says why and what to do."""


@attrs.frozen
class NodeCounters:
    """One node's live counters; ``None`` where the metrics did not say."""

    received: int | None = None
    emitted: int | None = None
    skipped: int | None = None
    errors: int | None = None
    queued: int | None = None
    queue_capacity: int | None = None
    running: bool | None = None

    def lines(self, source: bool = False) -> list[str]:
        """The counters as short lines of text, for a node's label.

        A source has no input, so its input count and queue are left out, as
        are skip and error counts while they are zero. A chained node has no
        queue (capacity 0) but an input count.
        """
        flow = []
        if self.received is not None and not source:
            flow.append(f"in {self.received}")
        if self.emitted is not None:
            flow.append(f"out {self.emitted}")
        if self.queue_capacity:
            flow.append(f"queue {self.queued or 0}/{self.queue_capacity}")
        elif self.queued:
            flow.append(f"queue {self.queued}")
        trouble = [
            f"{name} {count}"
            for name, count in (("skipped", self.skipped), ("errors", self.errors))
            if count
        ]
        state = [] if self.running is None else ["running" if self.running else "stopped"]
        return [", ".join(part) for part in (flow, trouble + state) if part]


Counters = Mapping[str, NodeCounters]


def parse_counters(text: str, pipeline: str, source: str = "metrics") -> dict[str, NodeCounters]:
    """Each node's counters for ``pipeline`` from a Prometheus text exposition.

    ``source`` names where the text came from, for error messages.
    """
    values: dict[str, dict[str, int | bool]] = {}
    pipelines: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                field = METRICS.get(sample.name)
                if field is None or "node" not in sample.labels:
                    continue
                pipelines.add(sample.labels.get("pipeline", ""))
                if sample.labels.get("pipeline") != pipeline:
                    continue
                node = values.setdefault(sample.labels["node"], {})
                node[field] = bool(sample.value) if field == "running" else int(sample.value)
    except ValueError as error:
        raise DiagramError(f"{source}: not Prometheus text format: {error}") from None
    if not values:
        if pipelines:
            found = ", ".join(repr(name) for name in sorted(pipelines))
            raise DiagramError(f"{source}: no metrics for pipeline {pipeline!r} (found {found})")
        raise DiagramError(f"{source}: no nanostream metrics (is it a nanostream run?)")
    return {node: NodeCounters(**fields) for node, fields in values.items()}  # type: ignore[arg-type]


def scrape_counters(url: str, pipeline: str) -> dict[str, NodeCounters]:
    """Read ``url`` (a ``/metrics`` endpoint) and parse it for ``pipeline``."""
    if not url.startswith(("http://", "https://")):
        raise DiagramError(
            f"metrics URL {url!r} is not http:// or https:// "
            "(for example http://127.0.0.1:9100/metrics)"
        )
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DiagramError(
            f"cannot read metrics from {url}: {reason} "
            "(is `nanostream run --metrics-port` running there?)"
        ) from None
    return parse_counters(text, pipeline, source=url)


def render(
    graph: NanoStreamGraph,
    format: str,
    counters: Counters | None = None,
    refresh: float | None = None,
) -> str | bytes:
    """``graph`` drawn in ``format``: text for the text formats, else bytes.

    ``refresh`` (HTML only) makes the page reload itself every so many seconds.
    """
    if format == "mermaid":
        return mermaid(graph, counters)
    if format == "dot":
        return dot(graph, counters)
    if format == "html":
        return html_page(graph, counters, refresh)
    if format in GRAPHVIZ_FORMATS:
        return graphviz(dot(graph, counters), format)
    raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")


def mermaid(graph: NanoStreamGraph, counters: Counters | None = None) -> str:
    """A Mermaid flowchart, for Markdown that renders Mermaid (GitHub, GitLab, ...)."""
    ids = _mermaid_ids(graph)
    lines = ["flowchart LR"]
    for node in graph:
        label = "<br/>".join(_label_lines(node, counters)).replace('"', "#quot;")
        lines.append(f'    {ids[node.name]}["{label}"]')
    arrows = {ITEMS: "-->", CHAINED: "== chained ==>", DEAD_LETTERS: "-. dead letters .->"}
    for sender, receiver, kind in _edges(graph):
        arrow = arrows[kind]
        lines.append(f"    {ids[sender]} {arrow} {ids[receiver]}")
    return "\n".join(lines) + "\n"


def dot(graph: NanoStreamGraph, counters: Counters | None = None) -> str:
    """Graphviz dot text; ``dot -Tsvg`` and friends turn it into pictures."""
    lines = [f"digraph {_dot_quote(graph.name)} {{", "    rankdir=LR;"]
    for node in graph:
        label = "\\n".join(_dot_escape(line) for line in _label_lines(node, counters))
        lines.append(f'    {_dot_quote(node.name)} [shape=box, label="{label}"];')
    styles = {
        ITEMS: "",
        CHAINED: ' [style=bold, label="chained"]',
        DEAD_LETTERS: ' [style=dashed, label="dead letters"]',
    }
    for sender, receiver, kind in _edges(graph):
        style = styles[kind]
        lines.append(f"    {_dot_quote(sender)} -> {_dot_quote(receiver)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graphviz(dot_text: str, format: str) -> bytes:
    """``dot_text`` rendered by Graphviz's ``dot`` program as ``format``."""
    program = shutil.which("dot")
    if program is None:
        raise DiagramError(
            f"--format {format} needs Graphviz's `dot` program, which is not on PATH: "
            "install Graphviz (e.g. `apt-get install graphviz`), "
            "or use --format mermaid or --format html"
        )
    try:
        result = subprocess.run(
            [program, f"-T{format}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DiagramError(f"Graphviz's dot took more than {TIMEOUT:g} s") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise DiagramError(f"Graphviz's dot failed (exit {result.returncode}): {message}")
    return result.stdout


def html_page(
    graph: NanoStreamGraph, counters: Counters | None = None, refresh: float | None = None
) -> str:
    """A self-contained HTML page: no scripts, nothing fetched from elsewhere."""
    if shutil.which("dot"):
        svg = graphviz(dot(graph, counters), "svg").decode("utf-8")
        svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype
    else:
        svg = layered_svg(graph, counters)
    title = html.escape(graph.name)
    reload = f'<meta http-equiv="refresh" content="{refresh:g}">\n' if refresh is not None else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{reload}<title>{title}</title>\n"
        "<style>\n"
        "body { font-family: sans-serif; margin: 2em; }\n"
        "svg { max-width: 100%; height: auto; }\n"
        "</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n{svg}\n</body>\n</html>\n"
    )


# Sizes for layered_svg, in pixels: a monospace character, a line of text,
# the padding inside a box, and the gaps between columns and between rows.
_CHAR_WIDTH = 7.8
_LINE_HEIGHT = 16
_PADDING = 10
_COLUMN_GAP = 70
_ROW_GAP = 30
_BOLD = ' font-weight="bold"'


def layered_svg(graph: NanoStreamGraph, counters: Counters | None = None) -> str:
    """An SVG drawing laid out without Graphviz.

    Each node sits in the column of its depth (the longest path from a
    source), so every edge points right; the boxes all share one size.
    """
    depth: dict[str, int] = {}
    for name in graph.topological_order():
        senders = [depth[sender] + 1 for sender in graph.inputs(name) if sender in depth]
        depth[name] = max(senders, default=0)
    columns: dict[int, list[str]] = {}
    for name, level in depth.items():
        columns.setdefault(level, []).append(name)

    labels = {node.name: _label_lines(node, counters) for node in graph}
    widest = max((len(line) for lines in labels.values() for line in lines), default=0)
    box_width = round(widest * _CHAR_WIDTH) + 2 * _PADDING
    box_height = max((len(lines) for lines in labels.values()), default=1) * _LINE_HEIGHT
    box_height += 2 * _PADDING
    corner: dict[str, tuple[int, int]] = {}
    for level, names in columns.items():
        for row, name in enumerate(names):
            corner[name] = (
                _PADDING + level * (box_width + _COLUMN_GAP),
                _PADDING + row * (box_height + _ROW_GAP),
            )
    width = _PADDING + len(columns) * (box_width + _COLUMN_GAP) - _COLUMN_GAP + _PADDING
    height = _PADDING + max(map(len, columns.values()), default=0) * (box_height + _ROW_GAP)

    edges = []
    for sender, receiver, kind in _edges(graph):
        (x1, y1), (x2, y2) = corner[sender], corner[receiver]
        x1, y1, y2 = x1 + box_width, y1 + box_height // 2, y2 + box_height // 2
        if depth[receiver] - depth[sender] > 1:
            # Skipping columns: run along the gap below the row rather than through boxes.
            lane = max(y1, y2) + box_height // 2 + _ROW_GAP // 2
            height = max(height, lane + _PADDING)
            turn = _COLUMN_GAP // 2
            shape = f"M{x1},{y1} L{x1 + turn},{lane} L{x2 - turn},{lane} L{x2},{y2}"
        else:
            shape = f"M{x1},{y1} L{x2},{y2}"
        line = {
            ITEMS: "",
            CHAINED: ' stroke-width="3"',
            DEAD_LETTERS: ' stroke-dasharray="6,4"',
        }[kind]
        title = f"{sender}->{receiver}" + (" (chained)" if kind == CHAINED else "")
        edges.append(
            f'<g class="edge"><title>{html.escape(title)}</title>'
            f'<path d="{shape}" fill="none" stroke="black"{line} marker-end="url(#arrow)"/></g>'
        )
    boxes = []
    for node in graph:
        x, y = corner[node.name]
        text = "".join(
            f'<text x="{x + _PADDING}" y="{y + _PADDING + (index + 1) * _LINE_HEIGHT - 4}"'
            f"{_BOLD if index == 0 else ''}>{html.escape(line)}</text>"
            for index, line in enumerate(labels[node.name])
        )
        boxes.append(
            f'<g class="node"><title>{html.escape(node.name)}</title>'
            f'<rect x="{x}" y="{y}" width="{box_width}" height="{box_height}" '
            f'fill="white" stroke="black"/>{text}</g>'
        )
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="13">\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="8" markerHeight="8" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    )
    return "\n".join([header, *edges, *boxes, "</svg>"])


def _label_lines(node: Node, counters: Counters | None) -> list[str]:
    lines = [node.name, type(node.processor).__name__]
    if counters and node.name in counters:
        lines += counters[node.name].lines(node.is_source)
    return lines


#: The kinds of edge: items through a channel, items handed on within one
#: task (operator chaining, see ``nanostream._runtime._chaining``), dead letters.
ITEMS, CHAINED, DEAD_LETTERS = "items", "chained", "dead letters"


def _edges(graph: NanoStreamGraph) -> Iterator[tuple[str, str, str]]:
    """``(sender, receiver, kind)`` for every edge, in node order."""
    chained = chained_parents(graph)
    for node in graph:
        for parent in node.parents:
            yield parent, node.name, CHAINED if chained.get(node.name) == parent else ITEMS
        if node.options.dead_letter:
            yield node.name, node.options.dead_letter, DEAD_LETTERS


def _mermaid_ids(graph: NanoStreamGraph) -> dict[str, str]:
    """A Mermaid id per node: its name with non-word characters replaced,
    made unique with a suffix where two names would collide."""
    ids: dict[str, str] = {}
    for node in graph:
        base = re.sub(r"\W", "_", node.name)
        candidate, suffix = base, 2
        while candidate in ids.values():
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        ids[node.name] = candidate
    return ids


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'
