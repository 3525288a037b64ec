"""The ``nanostream`` command: run, check, schema, nodes, graph."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

import attrs

from . import __version__
from ._graph import NanoStreamGraph
from .config import ConfigErrors, check_pipeline, load_pipeline, resolve_class
from .config._reference import reference_text
from .config._schema import parameters, schema_text, summary
from .nodes import ALIASES, BUILTIN_NODES, load_builtin


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
    from ._runtime import NodeError, run

    graph = _load(args.config)
    if graph is None:
        return 1
    try:
        run(graph, drain_timeout=args.drain_timeout)
    except NodeError as error:
        print(f"nanostream: {error}", file=sys.stderr)
        return 1
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
