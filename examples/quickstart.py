"""The quickstart: a source, a processor you write, a filter, and a printer.

    python examples/quickstart.py

Press Ctrl-C to stop early: the source stops, what is in flight drains
through, and every node tears down.
"""

import attrs

import nanostream as ns


@attrs.define
class Square(ns.NanoStreamProcessor):
    """Squares each number."""

    def process_item(self, message):
        return message * message


@attrs.define
class KeepEven(ns.NanoStreamProcessor):
    """Sends on only the even numbers (returning None sends nothing)."""

    def process_item(self, message):
        return message if message % 2 == 0 else None


graph = ns.NanoStreamGraph("quickstart")
graph.add("numbers", ns.SequenceEmitter(list(range(10))))
graph.add("square", Square(), parents=["numbers"])
graph.add("even", KeepEven(), parents=["square"])
graph.add("print", ns.PrintStreamProcessor(prefix="even square: "), parents=["even"])

if __name__ == "__main__":
    finished = ns.run(graph)
    print(f"done: {finished.stats['print'].received} items printed")
