"""SQL nodes against SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio

import nanostream as ns
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.sql import SqlReader, SqlWriter

_tables = itertools.count()


class Database:
    """A database of one kind, and a table name no other test uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.table = f"t{next(_tables)}"

    def run(self, sql: str, **parameters) -> list[tuple]:
        with self.engine.begin() as connection:
            result = connection.execute(sa.text(sql), parameters)
            return [tuple(row) for row in result] if result.returns_rows else []


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres").url
    database = Database(url)
    yield database
    database.engine.dispose()


def events_table(db: Database) -> None:
    db.run(f"CREATE TABLE {db.table} (name VARCHAR(20) PRIMARY KEY, n INTEGER NOT NULL)")


async def write(db: Database, items: list, **options) -> ns.GraphRun:
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter(items))
    writer = SqlWriter(url=db.url, table=db.table, **options.pop("writer", {}))
    graph.add("write", writer, parents=["items"], **options)
    return await ns.run_graph(graph)


async def write_skipping(db: Database, items: list) -> tuple[ns.GraphRun, list]:
    """Write ``items``, skipping those that fail; the run and its dead letters."""
    rejects = []
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter(items))
    graph.add(
        "write",
        SqlWriter(url=db.url, table=db.table),
        parents=["items"],
        on_error="skip",
        dead_letter="rejects",
    )
    graph.add("rejects", Collect(rejects))
    return await ns.run_graph(graph), rejects


async def test_a_batch_is_inserted(db):
    events_table(db)
    await write(db, [{"name": f"e{i}", "n": i} for i in range(100)])
    assert db.run(f"SELECT count(*), sum(n) FROM {db.table}") == [(100, sum(range(100)))]


async def test_upserts_replace_rows_of_the_same_key(db):
    events_table(db)
    options = {"writer": {"mode": "upsert", "key_columns": ["name"]}}
    await write(db, [{"name": "a", "n": 1}, {"name": "b", "n": 2}], **options)
    await write(db, [{"name": "a", "n": 10}, {"name": "c", "n": 3}], **options)
    assert sorted(db.run(f"SELECT name, n FROM {db.table}")) == [("a", 10), ("b", 2), ("c", 3)]


async def test_rows_the_database_refuses_fail_alone(db):
    events_table(db)
    items = [{"name": "a", "n": 1}, {"name": "b", "n": None}, {"name": "c", "n": 3}]
    run, rejects = await write_skipping(db, items)
    assert sorted(db.run(f"SELECT name FROM {db.table}")) == [("a",), ("c",)]
    assert [letter.item for letter in rejects] == [{"name": "b", "n": None}]
    assert isinstance(rejects[0].error, sa.exc.IntegrityError)
    assert run.stats["write"].skipped == 1


async def test_an_item_with_a_key_that_is_no_column_fails_alone(db):
    events_table(db)
    _, rejects = await write_skipping(db, [{"name": "a", "n": 1}, {"name": "b", "nn": 2}, 3])
    assert db.run(f"SELECT name FROM {db.table}") == [("a",)]
    errors = [str(letter.error) for letter in rejects]
    assert errors == [
        f"table {db.table!r} has no column nn",
        "a row must be a dict of column values, not int",
    ]


async def test_a_missing_table_is_an_error_at_setup(db):
    with pytest.raises(ns.NodeError, match=f"has no table {db.table!r}"):
        await write(db, [{"name": "a"}])


def test_upsert_without_key_columns_is_a_configuration_error():
    text = """\
pipeline_name: p
node_sequence:
  - name: items
    class: SequenceEmitter
    sequence: [1]
  - name: write
    class: SqlWriter
    parents: [items]
    url: sqlite:///x.db
    table: events
    mode: upsert
"""
    with pytest.raises(ConfigErrors, match="mode: upsert needs key_columns"):
        load_text(text, "p.yaml")


class Collect(ns.NanoStreamProcessor):
    """A sink that appends each item to a list."""

    def __init__(self, into: list) -> None:
        self.into = into

    def process_item(self, message) -> None:
        self.into.append(message)


def source_table(db: Database, count: int, start: int = 0) -> None:
    if start == 0:
        db.run(f"CREATE TABLE {db.table} (id INTEGER PRIMARY KEY, v VARCHAR(20))")
    rows = [{"id": i + 1, "v": f"v{i + 1}"} for i in range(start, start + count)]
    with db.engine.begin() as connection:
        connection.execute(sa.text(f"INSERT INTO {db.table} (id, v) VALUES (:id, :v)"), rows)


async def read_until(reader: SqlReader, count: int) -> list:
    """Run ``reader`` into a list until it holds ``count`` rows, then drain."""
    got = []
    enough = trio.Event()

    class Sink(ns.NanoStreamProcessor):
        def process_item(self, message):
            got.append(message)
            if len(got) >= count:
                enough.set()

    graph = ns.NanoStreamGraph("read")
    graph.add("rows", reader)
    graph.add("sink", Sink(), parents=["rows"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        with trio.fail_after(30):
            await enough.wait()
        run.stop()
    return got


async def test_the_reader_reads_rows_after_the_saved_position_across_restarts(db, tmp_path):
    source_table(db, 25)
    state = str(tmp_path / "position.json")

    def reader():
        return SqlReader(
            url=db.url,
            table=db.table,
            cursor_column="id",
            batch_size=10,
            state_path=state,
            interval=0.05,
        )

    first = await read_until(reader(), 25)
    assert [row["id"] for row in first] == list(range(1, 26))
    assert json.loads(Path(state).read_text()) == {"position": {"value": 25}}
    source_table(db, 5, start=25)
    second = await read_until(reader(), 5)
    assert second == [{"id": i, "v": f"v{i}"} for i in range(26, 31)]


async def test_the_reader_keeps_only_the_position_of_handled_rows(db, tmp_path):
    source_table(db, 30)
    state = str(tmp_path / "position.json")
    graph = ns.NanoStreamGraph("read")
    graph.add(
        "rows",
        SqlReader(url=db.url, table=db.table, cursor_column="id", batch_size=10, state_path=state),
    )

    class FailOn15(ns.NanoStreamProcessor):
        def process_item(self, message):
            if message["id"] == 15:
                raise RuntimeError("cannot take 15")

    graph.add("sink", FailOn15(), parents=["rows"], max_batch=1)
    with pytest.raises(ns.NodeError, match="cannot take 15"):
        await ns.run_graph(graph)
    # Rows 11-20 were not all handled: the next run starts after row 10.
    assert json.loads(Path(state).read_text()) == {"position": {"value": 10}}
    again = await read_until(
        SqlReader(url=db.url, table=db.table, cursor_column="id", state_path=state), 20
    )
    assert [row["id"] for row in again] == list(range(11, 31))


async def test_a_query_is_read_once(db):
    source_table(db, 2500)
    graph = ns.NanoStreamGraph("read")
    query = f"SELECT id, v FROM {db.table} WHERE id % 2 = 0 ORDER BY id"
    graph.add("rows", SqlReader(url=db.url, query=query, batch_size=1000))
    got = []
    graph.add("sink", Collect(got), parents=["rows"])
    await ns.run_graph(graph)
    assert [row["id"] for row in got] == list(range(2, 2501, 2))


async def test_a_query_is_read_incrementally_from_start_after(db):
    source_table(db, 10)
    query = f"SELECT id, upper(v) AS big FROM {db.table}"
    got = await read_until(SqlReader(url=db.url, query=query, cursor_column="id", start_after=7), 3)
    assert got == [{"id": i, "big": f"V{i}"} for i in (8, 9, 10)]


async def test_the_writer_carries_on_when_postgresql_restarts(postgres):
    db = Database(postgres.url)
    events_table(db)
    send, receive = trio.open_memory_channel(100)
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.ChannelSource(receive))
    graph.add(
        "write",
        SqlWriter(url=db.url, table=db.table),
        parents=["items"],
        on_error="retry",
        retries=50,
        retry_delay=0.05,
    )
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        await send.send({"name": "before", "n": 1})
        with trio.fail_after(30):
            while run.stats["write"].received < 1:
                await trio.sleep(0.01)
        await trio.to_thread.run_sync(postgres.stop)
        await send.send({"name": "during", "n": 2})
        with trio.fail_after(30):
            while run.stats["write"].errors < 1:
                await trio.sleep(0.01)
        await trio.to_thread.run_sync(postgres.start)
        await send.send({"name": "after", "n": 3})
        await send.aclose()
    db.engine.dispose()
    assert sorted(db.run(f"SELECT name FROM {db.table}")) == [("after",), ("before",), ("during",)]
    assert run.stats["write"].retries >= 1


async def test_without_sqlalchemy_setup_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # as if it were not installed
    graph = ns.NanoStreamGraph("write")
    graph.add("items", ns.SequenceEmitter([{"a": 1}]))
    graph.add("write", SqlWriter(url=f"sqlite:///{tmp_path}/x.db", table="t"), parents=["items"])
    with pytest.raises(ns.NodeError, match=r"pip install 'nanostream\[sql\]'"):
        await ns.run_graph(graph)


def test_postgresql_dates_and_decimals_print_as_json_lines(postgres, tmp_path):
    import subprocess

    (tmp_path / "pipeline.yaml").write_text(
        """\
pipeline_name: rows
node_sequence:
  - name: rows
    class: SqlReader
    url: ${DATABASE_URL}
    query: >
      SELECT 1 AS id, DATE '2026-01-02' AS day, TIMESTAMP '2026-01-02 03:04:05' AS at,
             12.50::numeric AS price, 3::numeric AS count;
  - name: print
    class: StdoutWriter
    parents: [rows]
    format: jsonl
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"],
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": postgres.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": 1,
        "day": "2026-01-02",
        "at": "2026-01-02T03:04:05",
        "price": 12.5,
        "count": 3,
    }


async def test_the_reader_waits_for_postgresql_to_come_back(postgres, caplog):
    db = Database(postgres.url)
    source_table(db, 3)
    got = []
    more = trio.Event()

    class Sink(ns.NanoStreamProcessor):
        def process_item(self, message):
            got.append(message["id"])
            if len(got) == 5:
                more.set()

    graph = ns.NanoStreamGraph("read")
    graph.add("rows", SqlReader(url=db.url, table=db.table, cursor_column="id", interval=0.05))
    graph.add("sink", Sink(), parents=["rows"])
    async with trio.open_nursery() as nursery:
        run = await nursery.start(ns.run_graph, graph)
        with trio.fail_after(30):
            while len(got) < 3:
                await trio.sleep(0.01)
            await trio.to_thread.run_sync(postgres.stop)
            while "trying again" not in caplog.text:
                await trio.sleep(0.01)
            await trio.to_thread.run_sync(postgres.start)
            db.engine.dispose()
            source_table(db, 2, start=3)
            await more.wait()
        run.stop()
    db.engine.dispose()
    assert got == [1, 2, 3, 4, 5]
