"""``nanostream init``: a new pipeline folder that passes ``check`` and its own tests.

Each template is a pipeline of a common shape, as ``bonobo init`` and
``rpk connect create`` make them: the YAML file with its schema line, a
module with one node of the user's own to edit, a test file of cases for
``nanostream test``, sample input and a README saying what to run.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

from ._pipeline_tests import schema_text as tests_schema_text
from .config._schema import schema_text

#: The shapes ``nanostream init --template`` offers, with what each makes.
TEMPLATES: dict[str, str] = {
    "files": "files dropped in a folder, transformed, written to another folder",
    "kafka": "records from a Kafka topic, transformed, produced to another topic",
    "http-sql": "JSON POSTed to an HTTP endpoint (webhooks), transformed, upserted into a "
    "SQL table",
}


class ScaffoldError(Exception):
    """A folder that cannot be made into a pipeline (not empty, not writable)."""


_FILES_PIPELINE = """\
# yaml-language-server: $schema=schemas/nanostream.schema.json
pipeline_name: {name}
node_sequence:
  # Each file closed in (or moved into) inbox/, those already there first.
  # Once its result is written, it moves to done/: after a crash or a stop,
  # the files not yet done are read again, so none is lost.
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: ${INBOX:-inbox}
    existing: true
    when_done: move
    done_dir: ${DONE:-done}
  - name: read
    class: FileReader
    parents: [watch]
  - name: transform
    class: nodes:Transform
    parents: [read]
  # One file per input file, named after it, written atomically.
  - name: write
    class: FileWriter
    path: ${OUTBOX:-outbox}/
    parents: [transform]
"""

_FILES_NODES = '''\
"""The pipeline's own nodes: edit Transform, or add classes and name them
in pipeline.yaml as ``nodes:ClassName``."""

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Transform(NanoStreamProcessor):
    """Upper-cases the text of each file, and adds ``suffix`` at its end.

    FileReader sends ``FileData(path, data, index)``; the result keeps the
    input's path so that FileWriter names the output after the input file.
    """

    suffix: str = attrs.field(
        default="", metadata={"description": "Text added at the end of each file."}
    )

    def process_item(self, message):
        return attrs.evolve(message, data=message.data.upper() + self.suffix)
'''

_FILES_TESTS = """\
# yaml-language-server: $schema=schemas/nanostream-tests.schema.json
# Run with `nanostream test`. Paths are relative to this folder; sources not
# given inputs emit nothing, and the nodes under `replace` do no I/O.
replace: [write]
cases:
  - name: a file in the inbox comes out upper-cased, under its own name
    inputs:
      watch: [samples/hello.txt]
    expect:
      transform:
        - {path: samples/hello.txt, data: "HELLO, WORLD\\n", index: null}
      write:
        length: 1
        json_schema:
          type: object
          required: [path, data]
          properties:
            data: {pattern: "^[^a-z]*$"}
"""

_FILES_SAMPLE = {
    "samples/hello.txt": "hello, world\n",
    # The folder the pipeline watches must exist; hidden files are not emitted.
    "inbox/.gitkeep": "",
}

_FILES_README = """\
# {name}

Files dropped into `inbox/` are upper-cased by `nodes.py:Transform` and
written to `outbox/` under the same name; each input then moves to `done/`.

```sh
nanostream check pipeline.yaml     # every error in the file, with its line
nanostream test                    # the cases in pipeline.test.yaml
nanostream run pipeline.yaml       # then drop files into inbox/; Ctrl-C drains
nanostream run --watch pipeline.yaml   # the same, reloaded when you edit a file
```

`INBOX`, `OUTBOX` and `DONE` in the environment change the folders.
"""

_KAFKA_PIPELINE = """\
# yaml-language-server: $schema=schemas/nanostream.schema.json
pipeline_name: {name}
node_sequence:
  # Offsets are committed once a record's results are produced: after a
  # crash or a stop, records may repeat but none is lost.
  - name: consume
    class: KafkaConsumer
    bootstrap_servers: ${BOOTSTRAP_SERVERS:-localhost:9092}
    topics: ["${INPUT_TOPIC:-input}"]
    group_id: ${GROUP_ID:-{name}}
    auto_offset_reset: earliest
  - name: transform
    class: nodes:Transform
    parents: [consume]
    on_error: skip
    dead_letter: rejected
  - name: produce
    class: KafkaProducer
    bootstrap_servers: ${BOOTSTRAP_SERVERS:-localhost:9092}
    topic: ${OUTPUT_TOPIC:-output}
    parents: [transform]
  # Records the transform cannot handle, with the reason.
  - name: rejected
    class: PrintStreamProcessor
    prefix: "rejected: "
"""

_KAFKA_NODES = '''\
"""The pipeline's own nodes: edit Transform, or add classes and name them
in pipeline.yaml as ``nodes:ClassName``."""

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Transform(NanoStreamProcessor):
    """Upper-cases the ``field`` of each JSON object read from Kafka.

    A record without that field raises ``KeyError``; the pipeline's
    ``on_error: skip`` counts it and sends it to the ``rejected`` node.
    """

    field: str = attrs.field(
        default="text", metadata={"description": "The key of the value to upper-case."}
    )

    def process_item(self, message):
        return {**message, self.field: message[self.field].upper()}
'''

_KAFKA_TESTS = """\
# yaml-language-server: $schema=schemas/nanostream-tests.schema.json
# Run with `nanostream test`: no broker needed. Sources not given inputs emit
# nothing, and the nodes under `replace` do no I/O.
replace: [produce, rejected]
cases:
  - name: each record's text is upper-cased
    inputs:
      consume:
        - {id: 1, text: hello}
        - {id: 2, text: world}
    expect:
      produce:
        - {id: 1, text: HELLO}
        - {id: 2, text: WORLD}
      rejected: []
  - name: a record without text is rejected, the others go on
    inputs:
      consume:
        - {id: 3}
        - {id: 4, text: ok}
    expect:
      produce: [{id: 4, text: OK}]
      rejected:
        contains:
          - {node: transform, item: {id: 3}, error: "KeyError: 'text'"}
"""

_KAFKA_README = """\
# {name}

Records (JSON objects) from the topic `input` get their `text` upper-cased by
`nodes.py:Transform` and are produced to the topic `output`; records without
`text` are printed as rejected.

```sh
nanostream check pipeline.yaml     # every error in the file, with its line
nanostream test                    # the cases in pipeline.test.yaml, no broker needed
nanostream run pipeline.yaml       # against the broker at $BOOTSTRAP_SERVERS
nanostream run --watch pipeline.yaml   # the same, reloaded when you edit a file
```

`BOOTSTRAP_SERVERS` (default `localhost:9092`), `INPUT_TOPIC`, `OUTPUT_TOPIC`
and `GROUP_ID` in the environment change where it reads and writes.
"""

_HTTP_PIPELINE = """\
# yaml-language-server: $schema=schemas/nanostream.schema.json
pipeline_name: {name}
node_sequence:
  # Each JSON body POSTed to /events. A sender gets 200 only once its row is
  # written, so a sender that retries until it gets a 2xx loses nothing.
  - name: receive
    class: HttpServer
    port: ${PORT:-8080}
    path: /events
    bearer_token: ${WEBHOOK_TOKEN:-change-me}
    on_error: skip          # a body that is not JSON: 400, and a line in rejects.jsonl
    dead_letter: rejects
  - name: transform
    class: nodes:Transform
    parents: [receive]
    on_error: skip          # an event without an id: a line in rejects.jsonl
    dead_letter: rejects
  - name: store
    class: SqlWriter
    url: ${DATABASE_URL:-sqlite:///events.db}
    table: events
    mode: upsert            # an event sent twice is stored once
    key_columns: [event_id]
    on_error: retry         # the database is away: write the batch again
    retries: 20
    retry_delay: 0.5
    parents: [transform]
  - name: rejects
    class: FileWriter
    path: rejects.jsonl
"""

_HTTP_NODES = '''\
"""The pipeline's own nodes: edit Transform, or add classes and name them
in pipeline.yaml as ``nodes:ClassName``."""

import json

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Transform(NanoStreamProcessor):
    """Turns one event (a JSON object POSTed to the endpoint) into a row of
    the table ``events``: its id, its type, and the whole event as JSON.

    An event without ``id_field`` raises ``KeyError``; the pipeline's
    ``on_error: skip`` writes it to ``rejects.jsonl`` with the reason.
    """

    id_field: str = attrs.field(
        default="id", metadata={"description": "The key of the event's unique id."}
    )

    def process_item(self, message):
        return {
            "event_id": str(message[self.id_field]),
            "kind": str(message.get("type", "")),
            "payload": json.dumps(message, sort_keys=True),
        }
'''

_HTTP_SCHEMA = """\
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR(64) PRIMARY KEY,
    kind     VARCHAR(100) NOT NULL,
    payload  TEXT NOT NULL
);
"""

_HTTP_TESTS = """\
# yaml-language-server: $schema=schemas/nanostream-tests.schema.json
# Run with `nanostream test`: no server is started and no database written.
# Sources not given inputs emit nothing, and the nodes under `replace` do no I/O.
replace: [store, rejects]
cases:
  - name: each event becomes a row
    inputs:
      receive:
        - {id: 1, type: signup, user: ann}
        - {id: 2, type: login}
    expect:
      store:
        - {event_id: "1", kind: signup, payload: '{"id": 1, "type": "signup", "user": "ann"}'}
        - {event_id: "2", kind: login, payload: '{"id": 2, "type": "login"}'}
      rejects: []
  - name: an event without an id is rejected, the others go on
    inputs:
      receive: [{type: ping}, {id: 3}]
    expect:
      store: [{event_id: "3", kind: "", payload: '{"id": 3}'}]
      rejects:
        length: 1
        json_schema:
          properties:
            node: {const: transform}
            error: {const: "KeyError: 'id'"}
"""

_HTTP_README = """\
# {name}

Events (JSON objects) POSTed to `http://127.0.0.1:8080/events` become rows
of the table `events` (in `events.db`, SQLite, made by `nanostream init`
from `schema.sql`), upserted on their `id`; events without an `id`, and
bodies that are not JSON, are written to `rejects.jsonl` with the reason.

```sh
pip install 'nanostream[sql]'      # SQLAlchemy, for SqlWriter
nanostream check pipeline.yaml     # every error in the file, with its line
nanostream test                    # the cases in pipeline.test.yaml
WEBHOOK_TOKEN=s3cret nanostream run pipeline.yaml
curl -H 'Authorization: Bearer s3cret' -d '{"id": 1, "type": "signup"}' \\
    http://127.0.0.1:8080/events
sqlite3 events.db 'SELECT * FROM events'
```

A sender gets `200` only once its event is in the table; while the
database is away the writer tries again, and the senders wait. For
PostgreSQL, make the table with `psql "$URL" -f schema.sql` and set
`DATABASE_URL` (a SQLAlchemy URL, such as
`postgresql+psycopg://user:password@localhost/db`; `pip install
'psycopg[binary]'`). `PORT` and `WEBHOOK_TOKEN` change the port and the
bearer token senders must give (default `change-me`).
"""

_FILES: dict[str, dict[str, str]] = {
    "files": {
        "pipeline.yaml": _FILES_PIPELINE,
        "nodes.py": _FILES_NODES,
        "pipeline.test.yaml": _FILES_TESTS,
        "README.md": _FILES_README,
        **_FILES_SAMPLE,
    },
    "kafka": {
        "pipeline.yaml": _KAFKA_PIPELINE,
        "nodes.py": _KAFKA_NODES,
        "pipeline.test.yaml": _KAFKA_TESTS,
        "README.md": _KAFKA_README,
    },
    "http-sql": {
        "pipeline.yaml": _HTTP_PIPELINE,
        "nodes.py": _HTTP_NODES,
        "pipeline.test.yaml": _HTTP_TESTS,
        "schema.sql": _HTTP_SCHEMA,
        "README.md": _HTTP_README,
    },
}

#: SQLite databases each template makes from its schema, so that it runs as made.
_DATABASES = {"http-sql": ("events.db", _HTTP_SCHEMA)}


def pipeline_name(folder: str | os.PathLike[str]) -> str:
    """A pipeline name from a folder's name: lower case, ``_`` between words."""
    base = os.path.basename(os.path.abspath(folder))
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "pipeline"


def scaffold(folder: str | os.PathLike[str], template: str = "files") -> list[str]:
    """Write a new pipeline of the shape ``template`` into ``folder``.

    ``folder`` is made if it does not exist; it must otherwise be empty, so
    nothing of the user's is ever overwritten. Returns the paths written.
    Raises :class:`ScaffoldError` for an unknown template, a folder that is
    not empty, or one that cannot be written.
    """
    if template not in _FILES:
        raise ScaffoldError(f"unknown template {template!r}: choose from {', '.join(_FILES)}")
    root = Path(folder)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{folder} exists and is not an empty folder; nothing written")
    name = pipeline_name(folder)
    files = {path: text.replace("{name}", name) for path, text in _FILES[template].items()}
    files["schemas/nanostream.schema.json"] = schema_text()
    files["schemas/nanostream-tests.schema.json"] = tests_schema_text()
    written = []
    try:
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(str(path))
        if template in _DATABASES:
            database, schema = _DATABASES[template]
            path = root / database
            with contextlib.closing(sqlite3.connect(path)) as connection:
                connection.executescript(schema)
            written.append(str(path))
    except (OSError, sqlite3.Error) as error:
        raise ScaffoldError(f"cannot write {folder}: {error}") from error
    return written


def next_steps(folder: str | os.PathLike[str]) -> str:
    """What to run after :func:`scaffold`, shown by ``nanostream init``."""
    return (
        f"\nnext:\n  cd {folder}\n  nanostream check pipeline.yaml\n  nanostream test\n"
        "  nanostream run pipeline.yaml"
    )
