"""A PostgreSQL server for tests and benchmarks, from the pgserver package:
its own binaries and a data directory of its own, reached over a Unix socket."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any


class Postgres:
    """A running PostgreSQL server that can be stopped and started again."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._server: Any = None

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is in CI.
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(self.directory, cleanup_mode="stop")

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    @property
    def url(self) -> str:
        """A SQLAlchemy URL of the server's ``postgres`` database, through psycopg."""
        return f"postgresql+psycopg://postgres:@/postgres?host={self.directory}"


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh server in a temporary directory, stopped and removed at the end."""
    # A short path: a Unix socket's path may be no longer than about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="nspg-", dir="/tmp") as directory:
        server = Postgres(os.path.join(directory, "data"))
        server.start()
        try:
            yield server
        finally:
            server.stop()
