"""Lookup: items enriched with their row of a table from a file or a Kafka topic."""

import json
import logging
import os

import pytest
import trio
import trio.testing

from nanostream import NanoStreamGraph, NodeError, SequenceEmitter, run_graph
from nanostream.config import check_text
from nanostream.nodes.lookup import Lookup, read_table
from nanostream.nodes.memory import ChannelSink, ChannelSource
from nanostream.testing import collect, process_items

CUSTOMERS_CSV = "id,name,tier\n7,Ada,gold\n8,Brian,silver\n"


@pytest.fixture
def customers(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)
    return path


def orders(*customers):
    return [{"order": n, "customer": c} for n, c in enumerate(customers)]


async def test_each_item_gets_the_fields_of_its_row_from_a_csv_file(customers):
    lookup = Lookup(on="customer", path=str(customers), table_key="id")
    results = await process_items(lookup, orders(7, "8"))
    assert results == [
        {"order": 0, "customer": 7, "name": "Ada", "tier": "gold"},
        {"order": 1, "customer": "8", "name": "Brian", "tier": "silver"},
    ]


async def test_a_json_lines_table_keyed_by_the_same_field_adds_only_the_fields_asked(tmp_path):
    path = tmp_path / "customers.jsonl"
    rows = [{"customer": 7, "name": "Ada", "tier": "gold"}, {"customer": 9, "name": "Cy"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
    lookup = Lookup(on="customer", path=str(path), fields=["tier"])
    results = await process_items(lookup, orders(7, 9))
    assert results == [{"order": 0, "customer": 7, "tier": "gold"}, {"order": 1, "customer": 9}]


async def test_a_miss_passes_the_item_unchanged_by_default(customers):
    lookup = Lookup(on="customer", path=str(customers), table_key="id")
    assert await process_items(lookup, orders(99)) == orders(99)


async def test_a_miss_can_drop_the_item_counted_and_logged(customers, caplog):
    caplog.set_level(logging.DEBUG, "nanostream")
    lookup = Lookup(on="customer", path=str(customers), table_key="id", on_miss="drop")
    results = await process_items(lookup, orders(99, 7, 98))
    assert [item["order"] for item in results] == [1]
    assert lookup.misses == 2
    assert "Lookup: no row for 99; the item is dropped" in caplog.text
    assert "Lookup: 2 items with no row were dropped" in caplog.text


async def test_a_miss_can_fail_under_the_node_error_policy(customers):
    lookup = Lookup(on="customer", path=str(customers), table_key="id", on_miss="fail")
    with pytest.raises(NodeError, match="no row for customer 99 in the table"):
        await process_items(lookup, orders(7, 99))
    lookup = Lookup(on="customer", path=str(customers), table_key="id", on_miss="fail")
    results = await process_items(lookup, orders(99, 8), on_error="skip")
    assert [item["name"] for item in results] == ["Brian"]


async def test_an_item_without_the_field_fails_naming_it(customers):
    lookup = Lookup(on="customer", path=str(customers), table_key="id")
    with pytest.raises(NodeError, match="the item has no field 'customer' \\(on\\)"):
        await process_items(lookup, [{"order": 1}])


def test_a_bad_table_file_is_an_error_naming_its_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: a row is a JSON object, not list"):
        read_table(str(path), "id")
    path.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not JSON: Expecting value"):
        read_table(str(path), "id")
    path = tmp_path / "t.csv"
    path.write_text("name\nAda\n")
    with pytest.raises(ValueError, match=r"t.csv:2: the row has no field 'id' \(table_key\)"):
        read_table(str(path), "id")


async def test_a_missing_table_file_fails_the_node_at_setup(tmp_path):
    lookup = Lookup(on="customer", path=str(tmp_path / "nowhere.csv"))
    with pytest.raises(NodeError, match=r"nowhere\.csv"):
        await process_items(lookup, orders(1))


async def _enriched(send, receive, item):
    await send.send(item)
    return await receive.receive()


async def test_the_table_is_read_again_when_the_file_changes(customers, caplog):
    """The file is replaced as a careful writer does (write, then rename);
    then a version that cannot be read is logged and the last good one kept."""
    caplog.set_level(logging.INFO, "nanostream")
    send_in, receive_in = trio.open_memory_channel(0)
    send_out, receive_out = trio.open_memory_channel(10)
    lookup = Lookup(on="customer", path=str(customers), table_key="id", reload_interval=0.01)
    graph = NanoStreamGraph()
    graph.add("orders", ChannelSource(receive_in))
    graph.add("lookup", lookup, ["orders"])
    graph.add("out", ChannelSink(send_out), ["lookup"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_graph, graph)
            first = await _enriched(send_in, receive_out, {"customer": 7})
            assert first["tier"] == "gold"
            new = customers.with_suffix(".new")
            new.write_text("id,name,tier\n7,Ada,platinum\n")
            os.replace(new, customers)
            while lookup.loads < 2:
                await trio.sleep(0.01)
            second = await _enriched(send_in, receive_out, {"customer": 7})
            assert second["tier"] == "platinum"
            new.write_text("name\nno key column\n")
            os.replace(new, customers)
            while "the table read before stays in use" not in caplog.text:
                await trio.sleep(0.01)
            third = await _enriched(send_in, receive_out, {"customer": 7})
            assert third["tier"] == "platinum"
            await send_in.aclose()


def test_the_table_comes_from_a_file_or_a_topic_and_check_says_where():
    errors = check_text(
        """\
pipeline_name: p
node_sequence:
  - name: src
    class: SequenceEmitter
    sequence: [1]
  - name: lookup
    class: Lookup
    parents: [src]
    on: customer
"""
    )
    assert [(e.line, e.col, e.message) for e in errors] == [
        (
            6,
            5,
            "node 'lookup': Lookup needs a table: give path (a CSV or JSON Lines file) or "
            "topic (a Kafka topic)",
        )
    ]


# ---------------------------------------------------------------- a Kafka topic


def _produce_records(broker, topic, records):
    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=broker)
    try:
        for key, value in records:
            encoded = None if value is None else json.dumps(value).encode()
            producer.send(topic, key=key.encode(), value=encoded)
        producer.flush()
    finally:
        producer.close()


async def test_a_topic_is_read_from_the_start_and_tombstones_delete_rows(broker):
    from kafka_testbed import create_topic

    topic = create_topic(broker, 2, "customers")
    await trio.to_thread.run_sync(
        _produce_records,
        broker,
        topic,
        [
            ("7", {"name": "Ada", "tier": "silver"}),
            ("8", {"name": "Brian"}),
            ("7", {"name": "Ada", "tier": "gold"}),  # a newer row replaces the older
            ("8", None),  # a tombstone deletes the key
            ("9", {"name": "Cy"}),
        ],
    )
    lookup = Lookup(
        on="customer",
        topic=topic,
        bootstrap_servers=broker,
        consumer_config={"client_id": "customers-table"},
    )
    with trio.fail_after(30):
        results = await process_items(lookup, orders(7, 8, 9))
    assert results == [
        {"order": 0, "customer": 7, "name": "Ada", "tier": "gold"},
        {"order": 1, "customer": 8},
        {"order": 2, "customer": 9, "name": "Cy"},
    ]


async def test_a_topic_keeps_the_table_up_to_date_while_the_pipeline_runs(broker):
    from kafka_testbed import create_topic

    topic = create_topic(broker, 1, "customers")
    await trio.to_thread.run_sync(_produce_records, broker, topic, [("7", {"tier": "silver"})])
    send_in, receive_in = trio.open_memory_channel(0)
    send_out, receive_out = trio.open_memory_channel(10)
    graph = NanoStreamGraph()
    graph.add("orders", ChannelSource(receive_in))
    graph.add("lookup", Lookup(on="customer", topic=topic, bootstrap_servers=broker), ["orders"])
    graph.add("out", ChannelSink(send_out), ["lookup"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_graph, graph)
            assert (await _enriched(send_in, receive_out, {"customer": 7}))["tier"] == "silver"
            updates = [("7", {"tier": "gold"}), ("8", {"tier": "new"})]
            await trio.to_thread.run_sync(_produce_records, broker, topic, updates)
            while (await _enriched(send_in, receive_out, {"customer": 8})).get("tier") != "new":
                await trio.sleep(0.05)
            assert (await _enriched(send_in, receive_out, {"customer": 7}))["tier"] == "gold"
            await trio.to_thread.run_sync(_produce_records, broker, topic, [("7", None)])
            while "tier" in await _enriched(send_in, receive_out, {"customer": 7}):
                await trio.sleep(0.05)
            await send_in.aclose()


async def test_a_topic_that_does_not_exist_fails_the_node_naming_it(broker):
    lookup = Lookup(on="customer", topic="no-such-topic-here", bootstrap_servers=broker)
    with trio.fail_after(30), pytest.raises(NodeError, match="topic 'no-such-topic-here'"):
        await process_items(lookup, orders(1))


async def test_a_record_that_is_not_a_json_object_is_skipped_and_logged(broker, caplog):
    import kafka
    from kafka_testbed import create_topic

    topic = create_topic(broker, 1, "customers")

    def produce():
        producer = kafka.KafkaProducer(bootstrap_servers=broker)
        producer.send(topic, key=b"7", value=b"not json")
        producer.send(topic, key=b"8", value=b'{"name": "Brian"}')
        producer.flush()
        producer.close()

    await trio.to_thread.run_sync(produce)
    graph = NanoStreamGraph()
    graph.add("orders", SequenceEmitter(orders(7, 8)))
    graph.add("lookup", Lookup(on="customer", topic=topic, bootstrap_servers=broker), ["orders"])
    with trio.fail_after(30):
        results = (await collect(graph))["lookup"]
    assert results == [{"order": 0, "customer": 7}, {"order": 1, "customer": 8, "name": "Brian"}]
    assert f"Lookup: {topic}[0] offset 0 is not a JSON object" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer,name\n1,a,b\n", ":2: the row has more fields than the header"),
        ("customer,name\n1,a\n2\n", ":3: the row has fewer fields than the header"),
        ('customer,name\n1,"broken\n', ": after line 1: unexpected end of data"),
    ],
)
def test_a_malformed_csv_row_is_an_error_naming_its_line(tmp_path, text, message):
    path = tmp_path / "customers.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_table(str(path), "customer")
    assert str(raised.value) == f"{path}{message}"
