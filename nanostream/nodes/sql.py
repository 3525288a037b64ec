"""SQL nodes: a sink that inserts or upserts batches into a table, and a source
that reads a query, incrementally by a cursor column or once.

Both use SQLAlchemy Core, so they work with every database it has a dialect
for (SQLite with no server; PostgreSQL, MySQL, ... with their drivers).
Database drivers block, so every call is made in a worker thread: one trip
per batch. SQLAlchemy is an optional dependency: ``pip install
'nanostream[sql]'``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import attrs
import trio

from .._params import collection
from .._processor import FailedItems, NanoStreamProcessor, WithAck
from ._checkpoint import Checkpoint

logger = logging.getLogger(__name__)


def _sqlalchemy() -> Any:
    """The sqlalchemy module, or an ImportError saying how to install it."""
    try:
        import sqlalchemy
    except ImportError:
        raise ImportError(
            "the SQL nodes need SQLAlchemy: pip install 'nanostream[sql]'"
            " (and the driver of your database, such as psycopg for PostgreSQL)"
        ) from None
    return sqlalchemy


def _engine(url: str) -> Any:
    """An engine for ``url``; its connections are checked before use, so a
    database that restarted is reconnected to rather than failing once more."""
    sa = _sqlalchemy()
    return sa.create_engine(url, pool_pre_ping=True)


def _check_url(url: str) -> None:
    """ValueError if ``url`` is not a database URL (when SQLAlchemy is there to tell)."""
    try:
        from sqlalchemy.engine import make_url
    except ImportError:
        return  # said when the node starts
    try:
        make_url(url)
    except Exception as error:
        raise ValueError(f"url is not a SQLAlchemy database URL: {error}") from None


def _url_field() -> Any:
    return attrs.field(
        repr=False,
        metadata={
            "description": "SQLAlchemy database URL (sqlite:///data.db,"
            " postgresql+psycopg://user:password@host/db); ${VARIABLE} reads it from the"
            " environment."
        },
    )


def _safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        return _sqlalchemy().engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database"


@attrs.define
class SqlWriter(NanoStreamProcessor):
    """Writes each item (a dict of column values) as a row of a table, one
    transaction per batch.

    ``mode: insert`` inserts; ``mode: upsert`` inserts or, where a row with
    the same ``key_columns`` exists, updates it (``ON CONFLICT DO UPDATE``
    in SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` in MySQL and
    MariaDB; the key columns need a unique index). Delivery is
    at-least-once, so after a crash a batch may be written again: upserts
    on a natural key make that harmless.

    Each batch is one transaction, so a batch is written whole or not at
    all. If the database refuses the batch for its data (a constraint, a
    bad value), its rows are written again one transaction each, and only
    the rows it refuses fail, under the node's ``on_error``. An item that
    is not a dict, or has a key that is not a column, fails alone before
    the batch is written. If the database cannot be reached, the whole
    batch fails: ``on_error: retry`` writes it again once it is back.
    """

    url: str = _url_field()
    table: str = attrs.field(metadata={"description": "The table to write to."})
    mode: Literal["insert", "upsert"] = attrs.field(
        default="insert",
        validator=attrs.validators.in_(("insert", "upsert")),
        metadata={"description": "insert, or upsert: insert or update by key_columns."},
    )
    key_columns: list[str] = attrs.field(
        factory=list,
        validator=collection,
        metadata={"description": "With upsert: the columns of the unique key rows are matched on."},
    )
    db_schema: str | None = attrs.field(
        default=None,
        metadata={"description": "The schema the table is in (PostgreSQL); unset: the default."},
    )

    _engine: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_engine")
    _table: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_table")
    _columns: frozenset[str] = attrs.field(
        factory=frozenset, init=False, repr=False, eq=False, alias="_columns"
    )

    def __attrs_post_init__(self) -> None:
        _check_url(self.url)
        if self.mode == "upsert" and not self.key_columns:
            raise ValueError("mode: upsert needs key_columns, the unique key rows are matched on")
        if self.mode == "insert" and self.key_columns:
            raise ValueError("key_columns are for mode: upsert")

    async def setup(self) -> None:
        sa = _sqlalchemy()

        def connect() -> tuple[Any, Any]:
            engine = _engine(self.url)
            try:
                table = sa.Table(
                    self.table, sa.MetaData(), autoload_with=engine, schema=self.db_schema
                )
            except sa.exc.NoSuchTableError:
                engine.dispose()
                raise ValueError(f"{_safe_url(self.url)} has no table {self.table!r}") from None
            except BaseException:
                engine.dispose()
                raise
            missing = [name for name in self.key_columns if name not in table.c]
            if missing:
                engine.dispose()
                raise ValueError(f"table {self.table!r} has no column {', '.join(missing)}")
            return engine, table

        self._engine, self._table = await trio.to_thread.run_sync(connect)
        self._columns = frozenset(self._table.c.keys())

    def _statement(self, columns: tuple[str, ...]) -> Any:
        table = self._table
        if self.mode == "insert":
            return table.insert()
        dialect = self._engine.dialect.name
        updated = [name for name in columns if name not in self.key_columns]
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            statement = insert(table)
            if not updated:
                return statement.on_conflict_do_nothing(index_elements=self.key_columns)
            return statement.on_conflict_do_update(
                index_elements=self.key_columns,
                set_={name: statement.excluded[name] for name in updated},
            )
        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert

            statement = insert(table)
            updated = updated or list(self.key_columns)
            return statement.on_duplicate_key_update(
                {name: statement.inserted[name] for name in updated}
            )
        raise ValueError(f"upsert is not supported for {dialect}; use sqlite, postgresql or mysql")

    def _check(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise TypeError(f"a row must be a dict of column values, not {type(item).__name__}")
        if item.keys() <= self._columns:
            return item
        unknown = [key for key in item if key not in self._columns]
        if unknown:
            raise ValueError(f"table {self.table!r} has no column {', '.join(map(str, unknown))}")
        return item

    def _execute(self, connection: Any, rows: list[dict[str, Any]]) -> None:
        # Rows with the same columns go in one executemany call.
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(row), []).append(row)
        for columns, group in by_columns.items():
            connection.execute(self._statement(columns), group)

    def _write_batch(self, messages: list[Any]) -> None:
        sa = _sqlalchemy()
        errors: dict[int, Exception] = {}
        rows: dict[int, dict[str, Any]] = {}
        for index, item in enumerate(messages):
            try:
                rows[index] = self._check(item)
            except (TypeError, ValueError) as error:
                errors[index] = error
        if rows:
            try:
                with self._engine.begin() as connection:
                    self._execute(connection, list(rows.values()))
            except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError):
                # Refused for its data: find the rows at fault, each alone.
                for index, row in rows.items():
                    try:
                        with self._engine.begin() as connection:
                            self._execute(connection, [row])
                    except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError) as e:
                        errors[index] = e
        if errors:
            raise FailedItems(errors)

    async def process_batch(self, messages: list[Any]) -> None:
        # Abandoned on cancellation, so that a database that does not answer
        # cannot hold up the end: the transaction then commits or rolls back
        # on its own, and the batch, never acknowledged, is written again
        # after a restart (at-least-once; an upsert makes that harmless).
        await trio.to_thread.run_sync(self._write_batch, messages, abandon_on_cancel=True)

    async def teardown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await trio.to_thread.run_sync(engine.dispose)


@attrs.define
class SqlReader(NanoStreamProcessor):
    """Emits the rows of a query or table, as dicts from column names.

    With ``cursor_column`` it reads incrementally: rows whose cursor value
    is greater than the last one read, in its order, ``batch_size`` at a
    time; once it has caught up, it asks again every ``interval`` seconds
    for new rows. The cursor must grow with every new row (an
    auto-increment key, or a timestamp no two rows share), or rows that
    share one may be missed. The position is saved to ``state_path`` once
    every row before it is handled, so a pipeline stopped or killed at any
    moment starts again where it was: rows may repeat, none is skipped.
    Without ``cursor_column`` the query is read once, then the node ends.
    While the database cannot be reached, an incremental reader logs a
    warning and asks again every ``interval`` seconds.

    ``query`` is any SELECT (its parameters are not bound: write values in
    it); it is read as ``SELECT * FROM (query) WHERE cursor > :position
    ORDER BY cursor LIMIT batch_size``. Or name a ``table``.
    """

    url: str = _url_field()
    query: str | None = attrs.field(
        default=None,
        metadata={"description": "The SELECT to read. Give query or table."},
    )
    table: str | None = attrs.field(
        default=None, metadata={"description": "A table to read whole. Give query or table."}
    )
    cursor_column: str | None = attrs.field(
        default=None,
        metadata={
            "description": "Read incrementally by this column, which grows with each new row;"
            " unset: read once."
        },
    )
    start_after: Any = attrs.field(
        default=None,
        metadata={
            "description": "With cursor_column: read rows after this value when there is no"
            " saved position; unset: from the first row."
        },
    )
    interval: float = attrs.field(
        default=5.0,
        validator=attrs.validators.gt(0),
        metadata={"description": "With cursor_column: seconds between polls once caught up."},
    )
    batch_size: int = attrs.field(
        default=1000,
        validator=attrs.validators.ge(1),
        metadata={"description": "Rows read per trip to the database."},
    )
    state_path: str | None = attrs.field(
        default=None,
        metadata={
            "description": "With cursor_column: a file that keeps the position across"
            " restarts; unset: each run starts from start_after."
        },
    )

    _engine: Any = attrs.field(default=None, init=False, repr=False, eq=False, alias="_engine")
    _checkpoint: Checkpoint | None = attrs.field(
        default=None, init=False, repr=False, eq=False, alias="_checkpoint"
    )

    def __attrs_post_init__(self) -> None:
        _check_url(self.url)
        if (self.query is None) == (self.table is None):
            raise ValueError("give either query or table")
        if self.state_path is not None and self.cursor_column is None:
            raise ValueError("state_path keeps the position of cursor_column: give one")

    def _source_sql(self) -> str:
        """The SELECT the rows come from: ``query`` (less a trailing ';'), or the table's."""
        if self.query is not None:
            return self.query.strip().rstrip(";")
        return f"SELECT * FROM {self._quoted_table()}"

    def _quoted_table(self) -> str:
        preparer = self._engine.dialect.identifier_preparer
        return ".".join(preparer.quote(part) for part in self.table.split("."))

    def _incremental_sql(self, after: bool) -> Any:
        sa = _sqlalchemy()
        inner = self._source_sql()
        column = self._engine.dialect.identifier_preparer.quote(self.cursor_column)
        where = f" WHERE q.{column} > :position" if after else ""
        return sa.text(f"SELECT * FROM ({inner}) AS q{where} ORDER BY q.{column} LIMIT :size")

    def _read_after(self, position: Any) -> list[dict[str, Any]]:
        statement = self._incremental_sql(position is not None)
        parameters = {"size": self.batch_size}
        if position is not None:
            parameters["position"] = position
        with self._engine.connect() as connection:
            result = connection.execute(statement, parameters)
            return [dict(row) for row in result.mappings()]

    async def setup(self) -> None:
        self._engine = await trio.to_thread.run_sync(_engine, self.url)

    async def generate_batches(self) -> AsyncIterator[list[Any]]:
        if self.cursor_column is None:
            async for batch in self._read_once():
                yield batch
            return
        checkpoint = self._checkpoint = Checkpoint(self.state_path, self.start_after)
        position = await trio.to_thread.run_sync(checkpoint.load)
        column = self.cursor_column
        sa = _sqlalchemy()
        while True:
            try:
                # Abandoned on cancellation, so a slow query never holds up a drain.
                rows = await trio.to_thread.run_sync(
                    self._read_after, position, abandon_on_cancel=True
                )
            except sa.exc.OperationalError as error:
                # The database is away (restarting, unreachable): ask again later.
                logger.warning(
                    "%s: %s; trying again in %ss",
                    _safe_url(self.url),
                    str(error.orig or error).strip().splitlines()[0],
                    self.interval,
                    extra={"event": "database_unavailable"},
                )
                await checkpoint.wait(self.interval)
                continue
            if rows:
                if column not in rows[0]:
                    raise ValueError(f"the rows read have no column {column!r}")
                position = rows[-1][column]
                acks = checkpoint.group(position, len(rows))
                yield [WithAck(row, ack) for row, ack in zip(rows, acks, strict=True)]
            if len(rows) < self.batch_size:
                await checkpoint.wait(self.interval)
            else:
                await checkpoint.save()

    async def _read_once(self) -> AsyncIterator[list[dict[str, Any]]]:
        sa = _sqlalchemy()
        inner = self._source_sql()
        connection = await trio.to_thread.run_sync(self._engine.connect)
        try:
            result = await trio.to_thread.run_sync(
                lambda: connection.execution_options(stream_results=True).execute(sa.text(inner))
            )
            mappings = result.mappings()
            while rows := await trio.to_thread.run_sync(mappings.fetchmany, self.batch_size):
                yield [dict(row) for row in rows]
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(connection.close)

    async def teardown(self) -> None:
        if self._checkpoint is not None:
            with trio.CancelScope(shield=True):
                await self._checkpoint.save()
        engine, self._engine = self._engine, None
        if engine is not None:
            await trio.to_thread.run_sync(engine.dispose)
