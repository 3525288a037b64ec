"""The ``nanostream`` command: run, test, init, check, schema, nodes, graph."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from . import __version__, _scaffold
from ._graph import NanoStreamGraph
from .config import ConfigErrors, check_pipeline, load_pipeline, resolve_class
from .config._loader import on_sys_path, secrets_of
from .config._reference import catalogue_text, describe_text, reference_text
from .config._schema import schema_text
from .observe import _diagram as diagram

if TYPE_CHECKING:
    from .observe import RunHolder

_logger = logging.getLogger("nanostream.run")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanostream",
        description="Run and inspect NanoStream pipelines described in YAML.",
    )
    parser.add_argument("--version", action="version", version=f"nanostream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="check a pipeline, then run it")
    run.add_argument("config", metavar="CONFIG", help="the pipeline's YAML file")
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long in-flight items and teardowns may take to "
        "drain (default 30); then, or on a second signal, the run stops within a second "
        "and exits with 128 + the signal number",
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

    run.add_argument(
        "--watch",
        action="store_true",
        help="on a change to the file or a module beside it, check the new version; "
        "if it is good, drain the pipeline and start the new one, else keep running",
    )

    test = commands.add_parser("test", help="run the test cases (NAME.test.yaml) of pipelines")
    test.add_argument(
        "paths",
        metavar="PATH",
        nargs="*",
        help="test files, pipeline files (their NAME.test.yaml) or folders to search "
        "(default: the current folder)",
    )
    test.add_argument(
        "-k", metavar="TEXT", dest="selected", help="run only the cases whose name contains TEXT"
    )
    test.add_argument(
        "--junit-xml",
        metavar="FILE",
        help="also write the results to FILE as a JUnit XML report, for CI servers",
    )
    test.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of test files instead"
    )
    test.add_argument("-o", "--output", metavar="FILE", help="with --schema: write to FILE")

    init = commands.add_parser("init", help="make a new pipeline folder that passes its tests")
    init.add_argument("folder", metavar="FOLDER", help="the folder to make (new, or empty)")
    init.add_argument(
        "--template",
        choices=_scaffold.TEMPLATES,
        default="files",
        help="the pipeline's shape (default files): "
        + "; ".join(f"{name}: {what}" for name, what in _scaffold.TEMPLATES.items()),
    )

    check = commands.add_parser("check", help="report every error in pipeline files")
    check.add_argument("configs", metavar="CONFIG", nargs="+", help="pipeline YAML files")

    schema = commands.add_parser("schema", help="print the JSON Schema of pipeline files")
    schema.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")

    nodes = commands.add_parser("nodes", help="list the node classes, or describe one")
    nodes.add_argument(
        "node_class", metavar="CLASS", nargs="?", help="a built-in name or module:ClassName"
    )
    nodes.add_argument(
        "--markdown", action="store_true", help="print the node reference as Markdown"
    )
    nodes.add_argument("-o", "--output", metavar="FILE", help="with --markdown: write to FILE")

    graph = commands.add_parser(
        "graph", help="draw a pipeline (Mermaid, Graphviz dot, HTML, SVG or PNG)"
    )
    graph.add_argument("config", metavar="CONFIG", help="the pipeline's YAML file")
    graph.add_argument(
        "--format",
        choices=diagram.FORMATS,
        default="mermaid",
        help="svg and png need Graphviz's dot; html uses it when installed (default mermaid)",
    )
    graph.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")
    graph.add_argument(
        "--metrics",
        metavar="URL",
        help="show each node's live counters, read from the /metrics URL of a running "
        "`nanostream run --metrics-port`",
    )
    graph.add_argument(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help="with --format html, --metrics and -o: rewrite the page every SECONDS, "
        "and make it reload itself, until interrupted",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 errors, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare ``nanostream``: what it can do
        parser.print_help()
        return 0
    handler = {
        "run": _run,
        "test": _test,
        "init": _init,
        "check": _check,
        "schema": _schema,
        "nodes": _nodes,
        "graph": _graph,
    }[args.command]
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (``nanostream nodes | head``): not an error of
        # ours. Point stdout at /dev/null so the interpreter's final flush
        # does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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

    handler = configure_logging(args.log_level, args.log_format)
    if args.watch:
        return _run_watching(args, handler)
    graph = _load(args.config)
    if graph is None:
        return 1
    # Values from the environment are never echoed, at run time either.
    secrets = secrets_of(graph)
    handler.addFilter(secrets)
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
        print(f"nanostream: {secrets.hide(str(failure), everywhere=False)}", file=sys.stderr)
    if failures:
        return 1
    run = holder.run
    if status == 0 and run is not None and not run.drained:
        how = f"{run.signal.name}: " if run.signal is not None else ""
        print(
            f"nanostream: {how}stopped before draining, with {run.abandoned} items in flight",
            file=sys.stderr,
        )
        return run.exit_status
    return status


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


def _run_watching(args: argparse.Namespace, handler: logging.Handler) -> int:
    import trio
    from rich.console import Console

    from ._watch import Observers, run_watching

    live = not args.quiet and sys.stderr.isatty()
    observers = Observers(
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        console=Console(stderr=True) if live else None,
        summaries=not args.quiet and not live,
        log_handler=handler,
    )
    return trio.run(
        partial(run_watching, args.config, drain_timeout=args.drain_timeout, observers=observers)
    )


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


def _test(args: argparse.Namespace) -> int:
    from . import _pipeline_tests as pipeline_tests

    if args.schema:
        _write(pipeline_tests.schema_text(), args.output)
        return 0
    try:
        paths = pipeline_tests.find_test_files(args.paths or ["."])
    except FileNotFoundError as error:
        print(f"nanostream test: {error}", file=sys.stderr)
        return 2
    if not paths:
        where = ", ".join(args.paths or ["."])
        wanted = f"*{pipeline_tests.SUFFIX}"
        print(f"nanostream test: no test files ({wanted}) in {where}", file=sys.stderr)
        return 2
    outcomes = []
    broken = {}
    for path in paths:
        try:
            test_file, graph = pipeline_tests.read_test_file(path)
        except pipeline_tests.TestFileError as error:
            _print_errors(error.errors)
            broken[path] = error.errors
            continue
        for outcome in pipeline_tests.run_test_file(test_file, graph, args.selected):
            outcomes.append(outcome)
            place = f"{path}:{outcome.case.line}: {outcome.case.name}"
            print(f"{'PASS' if outcome.passed else 'FAIL'} {place}")
            for failure in outcome.failures:
                print(textwrap.indent(failure, "    "))
            sys.stdout.flush()
    failed = sum(not outcome.passed for outcome in outcomes)
    summary = f"{len(outcomes) - failed} passed, {failed} failed"
    if broken:
        summary += f", {len(broken)} test file{'s' if len(broken) != 1 else ''} with errors"
    print(summary)
    if args.junit_xml:
        _write(pipeline_tests.junit_xml(outcomes, broken), args.junit_xml)
    return 1 if failed or broken else 0


def _init(args: argparse.Namespace) -> int:
    try:
        written = _scaffold.scaffold(args.folder, args.template)
    except _scaffold.ScaffoldError as error:
        print(f"nanostream init: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(_scaffold.next_steps(args.folder))
    return 0


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


def _write(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)


def _schema(args: argparse.Namespace) -> int:
    _write(schema_text(), args.output)
    return 0


def _nodes(args: argparse.Namespace) -> int:
    if args.markdown:
        _write(reference_text(), args.output)
        return 0
    if args.node_class is None:
        print(catalogue_text(), end="")
        return 0
    try:
        # A custom class is looked for where a pipeline file beside it would
        # find it: in the current directory.
        with on_sys_path(os.getcwd()):
            cls = resolve_class(args.node_class, embedding=True)
    except Exception as error:
        print(f"nanostream: {error}", file=sys.stderr)
        return 1
    print(describe_text(args.node_class, cls), end="")
    return 0


def _graph(args: argparse.Namespace) -> int:
    if args.refresh is not None and not (
        args.format == "html" and args.metrics and args.output and args.refresh > 0
    ):
        print(
            "nanostream graph: --refresh needs a positive number of seconds, "
            "--format html, --metrics URL and -o FILE",
            file=sys.stderr,
        )
        return 2
    graph = _load(args.config)
    if graph is None:
        return 1
    try:
        _draw(graph, args)
    except diagram.DiagramError as error:
        print(f"nanostream: {error}", file=sys.stderr)
        return 1
    if args.refresh is None:
        return 0
    # Ctrl-C ends the wait between two pages, never a page being written,
    # so no temporary file is left behind.
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    while not interrupted.wait(args.refresh):
        try:
            _draw(graph, args)
        except diagram.DiagramError as error:
            # The pipeline may be restarting: keep the last page and try again.
            print(f"nanostream: {error}", file=sys.stderr)
    return 0


def _draw(graph: NanoStreamGraph, args: argparse.Namespace) -> None:
    """Draw ``graph`` as ``args`` ask, with fresh counters if asked for."""
    counters = diagram.scrape_counters(args.metrics, graph.name) if args.metrics else None
    drawing = diagram.render(graph, args.format, counters, refresh=args.refresh)
    data = drawing.encode("utf-8") if isinstance(drawing, str) else drawing
    if args.output:
        from .nodes.files import _write_atomically

        # Replace the file whole, so a browser reloading it never sees half a page.
        directory, name = os.path.split(os.path.abspath(args.output))
        try:
            _write_atomically(directory, name, data)
        except OSError as error:
            raise diagram.DiagramError(f"cannot write {args.output}: {error}") from None
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    sys.exit(main())
