"""The ``nanostream`` command: run, check, schema, nodes, graph."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import attrs

from . import __version__
from ._graph import NanoStreamGraph
from .config import ConfigErrors, check_pipeline, load_pipeline, resolve_class
from .config._schema import parameters, schema_text, summary
from .nodes import ALIASES, BUILTIN_NODES, load_builtin

if TYPE_CHECKING:
    from .observe import RunHolder

_logger = logging.getLogger("nanostream.run")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanostream",
        description="Run and inspect NanoStream pipelines described in YAML.",
    )
    parser.add_argument("--version", action="version", version=f"nanostream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="check a pipeline, then run it")
    run.add_argument("config", metavar="CONFIG", help="the pipeline's YAML file")
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long in-flight items may drain (default 30)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics, /healthz and /readyz over HTTP on PORT",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address to serve metrics on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    run.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="the least severe log records shown (default warning; info adds start and stop)",
    )
    run.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="log lines as text, or as one JSON object each (default plain)",
    )
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no live table on a terminal and no summary at exit; logs only",
    )

    check = commands.add_parser("check", help="report every error in pipeline files")
    check.add_argument("configs", metavar="CONFIG", nargs="+", help="pipeline YAML files")

    schema = commands.add_parser("schema", help="print the JSON Schema of pipeline files")
    schema.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")

    nodes = commands.add_parser("nodes", help="list the node classes, or describe one")
    nodes.add_argument(
        "node_class", metavar="CLASS", nargs="?", help="a built-in name or module:ClassName"
    )

    graph = commands.add_parser("graph", help="draw a pipeline (Mermaid or Graphviz dot)")
    graph.add_argument("config", metavar="CONFIG", help="the pipeline's YAML file")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 errors, 2 usage)."""
    args = _parser().parse_args(argv)
    handler = {"run": _run, "check": _check, "schema": _schema, "nodes": _nodes, "graph": _graph}[
        args.command
    ]
    return handler(args)


def _print_errors(errors: Sequence[object]) -> None:
    for error in errors:
        print(error.format(), file=sys.stderr)  # type: ignore[attr-defined]
    count = len(errors)
    print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)


def _load(path: str) -> NanoStreamGraph | None:
    try:
        return load_pipeline(path)
    except ConfigErrors as error:
        _print_errors(error.errors)
        return None


def _run(args: argparse.Namespace) -> int:
    import trio

    from ._runtime import NodeError
    from .observe import RunHolder, configure_logging, summary_text

    configure_logging(args.log_level, args.log_format)
    graph = _load(args.config)
    if graph is None:
        return 1
    holder = RunHolder(graph)
    live = not args.quiet and sys.stderr.isatty()
    failures: list[NodeError] = []
    status = 0
    try:
        status = trio.run(_run_observed, holder, args, live)
    except* NodeError as group:
        failures = [error for error in group.exceptions if isinstance(error, NodeError)]
    if holder.run is not None or failures:
        _log_stop(holder)
        if not args.quiet and not live:
            print(summary_text(holder), file=sys.stderr)
    for failure in failures:
        print(f"nanostream: {failure}", file=sys.stderr)
    return 1 if failures else status


async def _run_observed(holder: RunHolder, args: argparse.Namespace, live: bool) -> int:
    """Run the graph with the metrics server and the live table beside it.

    The server starts first so that ``/readyz`` answers "not ready" while
    the nodes are set up; the table starts once there is a run to show.
    """
    import trio
    from rich.console import Console

    from ._runtime import run_graph
    from .observe import serve_observed, show_live

    async with trio.open_nursery() as nursery:
        if args.metrics_port is not None:
            address = f"[{args.metrics_host}]" if ":" in args.metrics_host else args.metrics_host
            try:
                port = await nursery.start(
                    partial(serve_observed, holder, args.metrics_port, host=args.metrics_host)
                )
            except OSError as error:
                print(
                    f"nanostream: cannot serve metrics on {address}:{args.metrics_port}: "
                    f"{error.strerror or error}",
                    file=sys.stderr,
                )
                return 1
            _logger.info(
                "serving metrics on http://%s:%d/metrics",
                address,
                port,
                extra={"pipeline": holder.graph.name, "event": "serving_metrics"},
            )

        async def run_then_stop_observing(task_status: trio.TaskStatus) -> None:
            try:
                await run_graph(
                    holder.graph,
                    drain_timeout=args.drain_timeout,
                    handle_signals=True,
                    task_status=task_status,
                )
            finally:
                holder.finished(trio.current_time())
                nursery.cancel_scope.cancel()

        run = await nursery.start(run_then_stop_observing)
        holder.started(run, trio.current_time())
        _logger.info(
            "pipeline %r started: %d nodes",
            holder.graph.name,
            len(holder.graph),
            extra={"pipeline": holder.graph.name, "event": "started"},
        )
        if live:
            nursery.start_soon(
                partial(
                    show_live,
                    holder,
                    Console(stderr=True),
                    redirect_stdout=sys.stdout.isatty(),
                    redirect_stderr=True,
                )
            )
    return 0


def _log_stop(holder: RunHolder) -> None:
    """The pipeline's end as one log record, with every node's counts."""
    graph = holder.graph
    stats = holder.run.stats if holder.run is not None else {}
    counts = {
        name: {
            "received": node.received,
            "emitted": node.emitted,
            "skipped": node.skipped,
            "errors": node.errors,
        }
        for name, node in stats.items()
    }
    phase = holder.phase()
    _logger.info(
        "pipeline %r %s after %.3fs",
        graph.name,
        phase,
        holder.elapsed(),
        extra={"pipeline": graph.name, "event": phase.replace(" ", "_"), "counts": counts},
    )


def _check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.configs:
        errors = check_pipeline(path)
        if errors:
            failed = True
            _print_errors(errors)
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _nodes(args: argparse.Namespace) -> int:
    if args.node_class is None:
        width = max((len(name) for name in BUILTIN_NODES), default=0)
        for name in sorted(BUILTIN_NODES):
            print(f"{name:<{width}}  {summary(load_builtin(name))}")
        for alias, target in sorted(ALIASES.items()):
            print(f"{alias:<{width}}  (alias of {target})")
        return 0
    try:
        cls = resolve_class(args.node_class)
    except Exception as error:
        print(f"nanostream: {error}", file=sys.stderr)
        return 1
    print(f"{args.node_class}: {summary(cls)}")
    rows = parameters(cls)
    if not attrs.has(cls):
        print("\n(not an attrs class: its parameters are not declared)")
        return 0
    print("\nparameters:" if rows else "\nno parameters")
    for name, type_, default, description in rows:
        shown = "required" if default is None else f"default {default}"
        print(f"  {name}: {type_} ({shown})")
        if description:
            print(f"      {description}")
    return 0


def _node_id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _graph(args: argparse.Namespace) -> int:
    graph = _load(args.config)
    if graph is None:
        return 1
    lines = []
    if args.format == "mermaid":
        lines.append("flowchart LR")
        for node in graph:
            label = f"{node.name}<br/>{type(node.processor).__name__}".replace('"', "#quot;")
            lines.append(f'    {_node_id(node.name)}["{label}"]')
        for node in graph:
            for parent in node.parents:
                lines.append(f"    {_node_id(parent)} --> {_node_id(node.name)}")
            if node.options.dead_letter:
                lines.append(
                    f"    {_node_id(node.name)} -. dead letters .-> "
                    f"{_node_id(node.options.dead_letter)}"
                )
    else:

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines.append(f"digraph {quote(graph.name)} {{")
        lines.append("    rankdir=LR;")
        for node in graph:
            label = f"{node.name}\\n{type(node.processor).__name__}"
            lines.append(f'    {quote(node.name)} [shape=box, label="{label}"];')
        for node in graph:
            for parent in node.parents:
                lines.append(f"    {quote(parent)} -> {quote(node.name)};")
            if node.options.dead_letter:
                lines.append(
                    f"    {quote(node.name)} -> {quote(node.options.dead_letter)} "
                    '[style=dashed, label="dead letters"];'
                )
        lines.append("}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
