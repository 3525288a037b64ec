"""Dedup: the first item of a key goes on; repeats within the time-to-live are dropped."""

import collections
import json
import logging
import signal

import pytest
from inbox_feeder import InboxFeeder, appended
from test_cli import start_nanostream_run, wait_while_running

from nanostream import KeyedState, NanoStreamGraph, SequenceEmitter, run_graph
from nanostream._runtime._keys import KeyedProcessor, attach_state
from nanostream._state import key_function
from nanostream.config import check_text, load_pipeline
from nanostream.nodes.dedup import Dedup
from nanostream.testing import Collector, collect


class Clock:
    """A clock a test moves by hand, in seconds."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def dedup_with(ttl, clock, key="id"):
    dedup = Dedup()
    attach_state(dedup, KeyedState(ttl, key_function(key), clock))
    return dedup, KeyedProcessor(dedup, dedup.state)


def events(*ids):
    return [{"id": id, "n": n} for n, id in enumerate(ids)]


def test_repeats_of_a_key_are_dropped_and_counted(caplog):
    dedup, node = dedup_with(None, Clock())
    caplog.set_level(logging.DEBUG, "nanostream")
    sent = [node.process_item(item) for item in events("a", "b", "a", "c", "b", "a")]
    assert [item and item["n"] for item in sent] == [0, 1, None, 3, None, None]
    assert dedup.duplicates == 3
    assert caplog.text.count("Dedup: dropped a repeat of key 'a'") == 2


def test_a_key_seen_longer_ago_than_the_ttl_goes_on_again_and_repeats_do_not_extend_it():
    clock = Clock()
    dedup, node = dedup_with(60, clock)
    assert node.process_item({"id": "a"}) == {"id": "a"}
    clock.now += 59
    assert node.process_item({"id": "a"}) is None  # a repeat at 59 s
    clock.now += 2  # 61 s after the first: the repeat did not renew it
    assert node.process_item({"id": "a"}) == {"id": "a"}
    clock.now += 60
    assert node.process_item({"id": "a"}) is None  # 60 s: still within
    assert dedup.duplicates == 2


def test_expired_keys_are_swept_so_the_state_does_not_grow_for_ever():
    clock = Clock()
    dedup, node = dedup_with(10, clock)
    for n in range(3000):
        clock.now += 1
        assert node.process_item({"id": n}) == {"id": n}
    # Swept every 1000 new keys (the state never held more than 1000 after a
    # sweep): the 3000th key's sweep leaves the last 11 seconds' keys.
    assert len(dedup.state) == 11
    assert len(dedup.state.changes()[0]) == 11


async def test_a_pipeline_with_a_key_and_a_state_ttl_drops_repeats(tmp_path):
    text = """\
pipeline_name: dedup
node_sequence:
  - name: events
    class: SequenceEmitter
    sequence:
      - {event_id: e1, value: 1}
      - {event_id: e2, value: 2}
      - {event_id: e1, value: 1}
      - {event_id: e3, value: 3}
      - {event_id: e2, value: 2}
  - name: once
    class: Dedup
    parents: [events]
    key: event_id
    state_ttl: 10m
"""
    assert check_text(text) == []
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    graph = load_pipeline(path)
    results = (await collect(graph))["once"]
    assert [item["event_id"] for item in results] == ["e1", "e2", "e3"]
    node = graph.nodes["once"]
    assert node.processor.duplicates == 2
    assert node.options.state_ttl == 600


async def test_dropped_items_show_in_the_node_counters_as_received_and_not_emitted():
    graph = NanoStreamGraph()
    graph.add("events", SequenceEmitter(events("a", "a", "b", "a")))
    dedup = graph.add("once", Dedup(), ["events"], key="id")
    run = await run_graph(graph)
    assert dedup.duplicates == 2
    assert (run.stats["once"].received, run.stats["once"].emitted) == (4, 2)


def test_dedup_without_a_key_is_refused_by_the_graph():
    graph = NanoStreamGraph()
    graph.add("events", SequenceEmitter([1]))
    graph.add("once", Dedup(), ["events"])
    [problem] = [p for p in graph.problems() if p.node == "once"]
    assert problem.key == "class"
    assert "Dedup keeps state by key: give it a key" in problem.message


def test_an_item_without_its_key_fails_naming_the_field():
    _, node = dedup_with(None, Clock())
    with pytest.raises(KeyError, match="the item has no field 'id'"):
        node.process_item({"no id": 1})


def test_the_json_schema_requires_a_key_for_dedup():

    import jsonschema

    from nanostream.config._schema import schema_text

    schema = json.loads(schema_text())
    node = {"name": "once", "class": "Dedup", "parents": ["events"]}
    pipeline = {"pipeline_name": "p", "node_sequence": [node]}
    with pytest.raises(jsonschema.ValidationError, match="'key' is a required property"):
        jsonschema.validate(pipeline, schema)
    jsonschema.validate({**pipeline, "node_sequence": [{**node, "key": "id"}]}, schema)


async def test_with_a_state_dir_the_keys_seen_survive_a_restart(tmp_path):
    async def run(ids):
        graph = NanoStreamGraph(state_dir=tmp_path)
        graph.add("events", SequenceEmitter(events(*ids)))
        graph.add("once", Dedup(), ["events"], key="id", state_ttl=3600)
        sink = graph.add("sink", Collector(), ["once"])
        await run_graph(graph)
        return [item["id"] for item in sink.items]

    assert await run(["e1", "e2"]) == ["e1", "e2"]
    assert await run(["e1", "e3", "e2"]) == ["e3"]


KILLED_PIPELINE = """\
pipeline_name: unique_events
state_dir: state
checkpoint_interval: 200ms
node_sequence:
  - name: inbox
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
    when_done: delete
  - name: read
    class: FileReader
    parents: [inbox]
    mode: jsonl
  - name: events
    class: Map
    parents: [read]
    function: events:record
  - name: once
    class: Dedup
    parents: [events]
    key: id
  - name: write
    class: FileWriter
    parents: [once]
    path: out.jsonl
"""


def test_killed_and_restarted_with_a_state_dir_each_id_goes_through_once_and_is_kept(tmp_path):
    """kill -9 while files are handled, then a restart: every id goes
    through; an id in a file done (deleted once a checkpoint covered it)
    before the kill, exactly once; and only an id first written after the
    last checkpoint can be written again, by the replay."""
    (tmp_path / "pipeline.yaml").write_text(KILLED_PIPELINE)
    (tmp_path / "events.py").write_text("def record(item):\n    return item.data\n")
    files = {
        f"{file:03}.jsonl": [{"id": f"e{(file * 7 + n) % 50}", "file": file} for n in range(5)]
        for file in range(80)
    }
    inbox = InboxFeeder(tmp_path / "inbox", files)
    out = tmp_path / "out.jsonl"

    def fed_until(done):
        inbox.keep_fed()
        return len(inbox.done()) >= done

    process = start_nanostream_run(tmp_path)
    try:
        wait_while_running(process, lambda: fed_until(10), "files done")
    finally:
        process.kill()  # SIGKILL
        process.communicate()
    done_before_kill = inbox.done()
    written_before_kill = {record["id"] for record in appended(out)}
    assert len(done_before_kill) < len(files), "the kill came after the end"
    inbox.drop_all()
    process = start_nanostream_run(tmp_path)
    try:
        wait_while_running(process, lambda: fed_until(len(files)), "every file done", 60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    counts = collections.Counter(record["id"] for record in appended(out))
    assert set(counts) == {record["id"] for records in files.values() for record in records}
    covered = {record["id"] for name in done_before_kill for record in files[name]}
    assert all(counts[id] == 1 for id in covered)
    assert {id for id, count in counts.items() if count > 1} <= written_before_kill
    assert max(counts.values()) <= 2


async def test_several_worker_threads_drop_every_repeat_whatever_the_key():
    keys = [f"k{n % 5000}" for n in range(20_000)]  # sweeps every 1000 new keys
    graph = NanoStreamGraph()
    graph.add("events", SequenceEmitter([{"id": key} for key in keys]))
    dedup = graph.add(
        "once", Dedup(), ["events"], key="id", state_ttl=3600, executor="thread", workers=4
    )
    sink = graph.add("sink", Collector(), ["once"])
    await run_graph(graph)
    assert sorted(item["id"] for item in sink.items) == sorted(set(keys))
    assert dedup.duplicates == len(keys) - 5000
