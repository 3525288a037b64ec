"""A pipeline run as a real process by test_signals.py.

    python signal_pipeline.py OUTPUT_FILE [drain|stuck]

'drain': an endless source feeding a sink that writes each item to
OUTPUT_FILE, buffering until teardown, which writes the buffer and a last
'teardown' line. 'stuck': the sink blocks forever on its first item, so
only a second signal can stop the process. Prints 'started' once running
and the source's emitted count at the end.
"""

import sys

import attrs
import trio

import nanostream as ns


@attrs.define
class BufferedWriter(ns.NanoStreamProcessor):
    path: str
    stuck: bool = False
    buffer: list = attrs.field(factory=list)

    async def process_item(self, message):
        if self.stuck:
            await trio.sleep_forever()
        self.buffer.append(message)
        await trio.sleep(0.001)

    def teardown(self):
        with open(self.path, "w") as output:
            output.writelines(f"{item}\n" for item in self.buffer)
            output.write("teardown\n")


class Counter(ns.NanoStreamProcessor):
    def generate(self):
        count = 0
        while True:
            yield count
            count += 1


async def main(path: str, mode: str) -> None:
    graph = ns.NanoStreamGraph("signals")
    graph.add("count", Counter(), max_batch=4)
    graph.add("write", BufferedWriter(path, stuck=mode == "stuck"), ["count"], buffer_size=2)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(
            lambda task_status: ns.run_graph(
                graph, handle_signals=True, drain_timeout=60, task_status=task_status
            )
        )
        print("started", flush=True)
    print(f"emitted {running.stats['count'].emitted}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
