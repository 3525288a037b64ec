"""The state store: one SQLite file holding every node's state at the last checkpoint.

SQLite, from Python's standard library, needs no server and no install, and
writes a checkpoint as one transaction: after a crash the file holds the
last checkpoint whole or the one before it, never a mix. Its write-ahead
log (``journal_mode=WAL``) with ``synchronous=FULL`` makes a committed
checkpoint survive a power cut too (https://www.sqlite.org/wal.html).

Layout, in ``<state_dir>/state.sqlite3``:

* ``state(node, key, value, written)``: one row per key of a node's
  :class:`~nanostream.KeyedState`, key and value pickled; a checkpoint
  writes only the keys changed since the one before, so its cost follows
  the rate of change, not the size of the state.
* ``snapshots(node, value)``: what each node's ``snapshot()`` returned
  (a source's position, a window's watermark), pickled.
* ``checkpoints(id, taken)``: when each checkpoint was saved.
* ``nodes(node, config)``: each node's class, parameters and key as they
  were when its state was saved (JSON), so that a run whose nodes have
  changed since is told, rather than handed state that may not fit.

Keys are compared by their pickled bytes: use strings, numbers, booleans,
``None``, bytes or tuples of those, whose pickles are the same for equal
values.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import sqlite3
import time
from collections.abc import Hashable, Iterator
from typing import IO, Any

#: The name of the store's file in a pipeline's ``state_dir``.
STORE_FILE = "state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    node TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, written REAL NOT NULL,
    PRIMARY KEY (node, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (node TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (id INTEGER PRIMARY KEY, taken REAL NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, config TEXT NOT NULL);
"""


class Changes:
    """One checkpoint's writes, pickled: the rows to replace and to delete
    per node, and every node's snapshot."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bytes, bytes, float]] = []
        self.deleted: list[tuple[str, bytes]] = []
        self.snapshots: list[tuple[str, bytes]] = []
        self.configs: list[tuple[str, str]] = []

    def add_state(
        self, node: str, written: dict[Hashable, tuple[Any, float]], deleted: list[Hashable]
    ) -> None:
        rows = self.rows
        for key, (value, at) in written.items():
            rows.append((node, _pickle(key), _pickle(value), at))
        self.deleted += [(node, _pickle(key)) for key in deleted]

    def add_snapshot(self, node: str, snapshot: Any) -> None:
        self.snapshots.append((node, _pickle(snapshot)))


class StateStore:
    """The SQLite file of one pipeline's state. Blocking: the runtime calls
    it from a worker thread, one call at a time."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, STORE_FILE)
        if os.path.exists(state_dir) and not os.path.isdir(state_dir):
            raise NotADirectoryError(f"{state_dir!r} is a file, not a folder")
        os.makedirs(state_dir, exist_ok=True)
        self._lock = _lock(state_dir)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def checkpoints(self) -> int:
        """How many checkpoints this store holds (0 for a new one)."""
        return self._db.execute("SELECT count(*) FROM checkpoints").fetchone()[0]

    def state(self, node: str) -> Iterator[tuple[Hashable, Any, float]]:
        """``node``'s keys at the last checkpoint, as ``(key, value, written)``."""
        rows = self._db.execute("SELECT key, value, written FROM state WHERE node = ?", (node,))
        for key, value, written in rows:
            yield pickle.loads(key), pickle.loads(value), written

    def configs(self) -> dict[str, str]:
        """Each node's configuration when its state was last saved."""
        return dict(self._db.execute("SELECT node, config FROM nodes").fetchall())

    def nodes_with_state(self) -> set[str]:
        """The nodes the store holds state or a snapshot of."""
        rows = self._db.execute("SELECT DISTINCT node FROM state UNION SELECT node FROM snapshots")
        return {node for (node,) in rows}

    def snapshot(self, node: str) -> tuple[bool, Any]:
        """Whether ``node`` has a snapshot, and what it is."""
        row = self._db.execute("SELECT value FROM snapshots WHERE node = ?", (node,)).fetchone()
        return (False, None) if row is None else (True, pickle.loads(row[0]))

    def save(self, changes: Changes) -> None:
        """Write one checkpoint, all of it or (on any error) none of it."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM state WHERE node = ? AND key = ?", changes.deleted)
            db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", changes.rows)
            db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", changes.snapshots)
            db.executemany("INSERT OR REPLACE INTO nodes VALUES (?, ?)", changes.configs)
            db.execute("INSERT INTO checkpoints (taken) VALUES (?)", (time.time(),))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
        self._lock.close()


def _lock(state_dir: str) -> IO[str]:
    """Hold ``state_dir`` for this process (an exclusive ``flock`` on its
    ``lock`` file, released when the process ends, however it ends): two
    pipelines saving into one store would each restore the other's state.

    Raises ``RuntimeError`` naming the process that holds it.
    """
    file = open(os.path.join(state_dir, "lock"), "a+")  # noqa: SIM115 (held until close)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise RuntimeError(
            f"the state_dir is in use by process {holder}: one pipeline process owns a "
            "state_dir at a time"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(str(os.getpid()))
    file.flush()
    return file


def _pickle(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
