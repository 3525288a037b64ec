"""Every example runs and prints what it promises."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML
from test_cli import start_nanostream_run, wait_while_running

from nanostream.config import check_pipeline

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(*command: str, cwd: Path = EXAMPLES) -> subprocess.CompletedProcess:
    """``command`` run to its end in ``cwd``, which it must end well."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done


def finished_example(folder: str) -> subprocess.CompletedProcess:
    """``nanostream run --quiet pipeline.yaml`` in an example's folder, run to its end."""
    return run(
        sys.executable, "-m", "nanostream", "run", "--quiet", "pipeline.yaml", cwd=EXAMPLES / folder
    )


def test_the_python_quickstart_prints_even_squares():
    output = run(sys.executable, "quickstart.py").stdout
    assert output.splitlines() == [
        *(f"even square: {n * n}" for n in range(0, 10, 2)),
        "done: 5 items printed",
    ]


def test_the_yaml_quickstart_prints_each_number():
    output = run(sys.executable, "-m", "nanostream", "run", "quickstart.yaml").stdout
    assert output.splitlines() == [f"number: {n}" for n in range(1, 6)]


def test_every_yaml_example_passes_check_and_the_json_schema():
    schema = json.loads((EXAMPLES.parent / "schemas" / "nanostream.schema.json").read_text())
    # NAME.test.yaml files are test cases, checked by `nanostream test`.
    examples = sorted(p for p in EXAMPLES.rglob("*.yaml") if not p.name.endswith(".test.yaml"))
    assert examples
    for path in examples:
        assert check_pipeline(path) == [], path
        jsonschema.validate(YAML(typ="safe").load(path.read_text()), schema)


def test_the_watchdog_example_copies_files_dropped_into_its_inbox(tmp_path):
    import os
    import shutil
    import signal

    folder = tmp_path / "watchdog_example"
    shutil.copytree(EXAMPLES / "watchdog_example", folder)
    assert check_pipeline(folder / "pipeline.yaml") == []
    process = start_nanostream_run(folder)
    try:
        inbox, outbox = folder / "inbox", folder / "outbox"
        expected = {}

        def wait_for(predicate, what):
            wait_while_running(process, predicate, what, timeout=20)

        # The watch starts during setup; a probe file tells when it is live.
        def probe_arrived():
            (inbox / "probe.txt").write_text("probe")
            return (outbox / "probe.txt").exists()

        wait_for(probe_arrived, "the watch to start")
        expected["probe.txt"] = "probe"
        with open(inbox / "slow.txt", "w") as f:
            for number, piece in enumerate(("first ", "second ", "third\n")):
                f.write(piece)
                f.flush()
                # A file closed after this piece was written reaches the
                # outbox; the open file, written before it, must not have.
                marker = f"marker{number}.txt"
                (inbox / marker).write_text(marker)
                expected[marker] = marker
                wait_for(lambda m=marker: (outbox / m).exists(), marker)
                assert not (outbox / "slow.txt").exists()
        expected["slow.txt"] = "first second third\n"
        outside = tmp_path / "moved.txt"
        outside.write_text("moved in\n")
        os.rename(outside, inbox / "moved.txt")
        expected["moved.txt"] = "moved in\n"
        wait_for(
            lambda: all((outbox / n).exists() for n in expected),
            f"{sorted(expected)} in the outbox",
        )
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    for name, content in expected.items():
        assert (outbox / name).read_text() == content
    assert str(inbox / "slow.txt") in out.splitlines()
    assert str(inbox / "moved.txt") in out.splitlines()


def _run_example(folder, **environment):
    """``nanostream run pipeline.yaml`` in an example's folder, in the background."""
    return start_nanostream_run(EXAMPLES / folder, env=environment)


def _drain(process):
    """Stop an example as Ctrl-C does; return what it printed."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def test_the_kafka_examples_pass_check_and_the_json_schema():
    schema = json.loads((EXAMPLES.parent / "schemas" / "nanostream.schema.json").read_text())
    for path in (
        EXAMPLES / "dir_to_kafka" / "pipeline.yaml",
        EXAMPLES / "kafka_to_kafka" / "pipeline.yaml",
    ):
        assert check_pipeline(path) == [], path
        jsonschema.validate(YAML(typ="safe").load(path.read_text()), schema)


def test_the_dir_to_kafka_example_publishes_each_text_file(broker, tmp_path):
    from kafka_testbed import TopicReader, create_topic

    inbox, topic = tmp_path / "inbox", create_topic(broker, 1, "files")
    inbox.mkdir()
    (inbox / "waiting.txt").write_text("there before the start\n")
    (inbox / "ignored.csv").write_text("a,b\n")
    process = _run_example("dir_to_kafka", BOOTSTRAP_SERVERS=broker, INBOX=str(inbox), TOPIC=topic)
    reader = TopicReader(broker, topic)
    try:
        reader.read_until(lambda values: len(values) == 1, "the waiting file", [process])
        (inbox / "new.txt").write_text("written while\nit runs\n")
        values = reader.read_until(lambda values: len(values) == 2, "the new file", [process])
    finally:
        reader.close()
        _drain(process)
    assert values == [
        {"file": "waiting.txt", "lines": 1, "words": 4, "text": "there before the start\n"},
        {"file": "new.txt", "lines": 2, "words": 4, "text": "written while\nit runs\n"},
    ]


def test_the_kafka_to_kafka_example_totals_orders_and_rejects_bad_ones(broker):
    from kafka_testbed import TopicReader, create_topic, produce_json, unique_name

    source, output = create_topic(broker, 2, "orders"), create_topic(broker, 1, "totals")
    orders = [
        {"order": "A1", "lines": [{"price": 2.5, "quantity": 2}, {"price": 0.1, "quantity": 3}]},
        {"order": "B2", "lines": []},
        {"order": "C3", "lines": [{"price": 9.99}]},  # no quantity: rejected
        {"order": "D4", "lines": [{"price": 1.25, "quantity": 4}]},
    ]
    produce_json(broker, source, orders, partitions=2)
    process = _run_example(
        "kafka_to_kafka",
        BOOTSTRAP_SERVERS=broker,
        SOURCE_TOPIC=source,
        OUTPUT_TOPIC=output,
        GROUP_ID=unique_name("totals"),
        SESSION_TIMEOUT_MS="6000",
        MAX_POLL_INTERVAL_MS="3000",
    )
    reader = TopicReader(broker, output)
    try:
        values = reader.read_until(lambda values: len(values) == 3, "three totals", [process])
    finally:
        reader.close()
        out = _drain(process)
    assert sorted(values, key=lambda value: value["order"]) == [
        {"order": "A1", "total": 5.3},
        {"order": "B2", "total": 0},
        {"order": "D4", "total": 5.0},
    ]
    [rejected] = out.splitlines()
    assert rejected.startswith("rejected: DeadLetter(node='total', item={'order': 'C3'")


async def test_the_websocket_relay_broadcasts_what_it_hears_shouted():
    import signal
    import socket

    import pytest
    import trio
    from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

    from nanostream.nodes.websocket import _close_transport

    folder = EXAMPLES / "websocket_relay"
    assert check_pipeline(folder / "pipeline.yaml") == []

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    in_port, out_port = free_port(), free_port()
    environment = {"RELAY_IN_PORT": str(in_port), "RELAY_OUT_PORT": str(out_port)}
    process = start_nanostream_run(folder, env=environment)

    async def connect(url, task_status=trio.TASK_STATUS_IGNORED):
        """Connect once the relay listens (it is starting in another process)."""
        while True:
            assert process.poll() is None, process.communicate()
            try:
                async with open_websocket_url(url) as ws:
                    try:
                        task_status.started(ws)
                        await trio.sleep_forever()
                    finally:
                        await _close_transport(ws)
            except HandshakeError:
                await trio.sleep(0.05)

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                out = await nursery.start(connect, f"ws://127.0.0.1:{out_port}/out")
                into = await nursery.start(connect, f"ws://127.0.0.1:{in_port}/in")
                # Until a probe comes back, the output client may not be registered yet.
                heard = trio.Event()

                async def probe():
                    while not heard.is_set():
                        await into.send_message("probe")
                        await trio.sleep(0.05)

                nursery.start_soon(probe)
                assert await out.get_message() == "PROBE!"
                heard.set()
                await into.send_message("hello")
                await into.send_message("websocket")
                replies = []
                while len(replies) < 2:
                    reply = await out.get_message()
                    if reply != "PROBE!":
                        replies.append(reply)
                assert replies == ["HELLO!", "WEBSOCKET!"]
                process.send_signal(signal.SIGINT)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await out.get_message()
                assert closed.value.reason.code == 1001
                nursery.cancel_scope.cancel()
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err


def test_the_webhook_example_stores_each_order_once_in_postgresql(tmp_path, postgres):
    import os
    import re
    import shutil
    import signal

    import httpx
    import sqlalchemy as sa

    folder = tmp_path / "webhook_to_postgres"
    shutil.copytree(EXAMPLES / "webhook_to_postgres", folder)
    engine = sa.create_engine(postgres.url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS orders"))
        connection.execute(sa.text((folder / "schema.sql").read_text()))
    env = {"DATABASE_URL": postgres.url, "PORT": "0", "WEBHOOK_TOKEN": "s3cret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nanostream", "run", "pipeline.yaml", "--log-level", "info"],
        cwd=folder,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stderr:
            served = re.search(r"serving POST /orders on (http://\S+)", line)
            if served:
                break
        else:
            raise AssertionError(process.communicate())
        url = served.group(1) + "/orders"
        auth = {"authorization": "Bearer s3cret"}
        order = {"id": 7, "customer": "Ann", "items": [{"price": "2.50", "quantity": 2}]}
        statuses = [
            httpx.post(url, json=order, headers=auth).status_code,
            httpx.post(url, json=order, headers=auth).status_code,  # sent again: stored once
            httpx.post(url, json={"id": 8, "items": []}, headers=auth).status_code,
            httpx.post(url, content=b"{oops", headers=auth).status_code,
            httpx.post(url, json={"customer": "no id"}, headers=auth).status_code,
            httpx.post(url, json=order).status_code,
        ]
        # Each 200 came once its row was written.
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM orders ORDER BY order_id"))
            assert [tuple(row) for row in rows] == [("7", "Ann", 2, 500), ("8", "", 0, 0)]
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        engine.dispose()
    assert statuses == [200, 200, 200, 400, 200, 401]
    assert process.returncode == 0, errors
    rejects = [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]
    assert [(r["node"], r["error"].split(":")[0]) for r in rejects] == [
        ("hooks", "ValueError"),
        ("order", "KeyError"),
    ]


def test_the_api_example_prints_each_page_once_across_runs(tmp_path):
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    events = [{"id": n, "type": "created" if n % 2 else "paid"} for n in range(1, 24)]

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)
            after = int(query.get("after", ["0"])[0])
            page = [event for event in events if event["id"] > after][:5]
            cursor = str(page[-1]["id"]) if page else str(after)
            body = json.dumps({"data": page, "next_cursor": cursor}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        env = {
            **os.environ,
            "API_URL": f"http://127.0.0.1:{server.server_address[1]}/events",
            "STATE": str(tmp_path / "cursor.json"),
        }

        def printed() -> list:
            done = subprocess.run(
                [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"],
                cwd=EXAMPLES / "api_to_stdout",
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return [json.loads(line) for line in done.stdout.splitlines()]

        assert printed() == events
        assert printed() == []
        events.append({"id": 24, "type": "refunded"})
        assert printed() == [{"id": 24, "type": "refunded"}]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_executors_example_prints_each_hash_in_order():
    import hashlib

    def digest(number: int) -> str:
        value = str(number).encode()
        for _ in range(20_000):
            value = hashlib.sha256(value).digest()
        return value.hex()[:12]

    done = finished_example("executors")
    assert done.stdout.splitlines() == [f"{n}: {digest(n)}" for n in range(20)]


def test_the_window_example_counts_clicks_per_user_and_minute():
    done = finished_example("window_counts")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    ten = 1714557600.0  # 2024-05-01T10:00:00Z
    windows = [
        (o["key"], o["start"] - ten, o["end"] - ten, o["clicks"], o["spent"], o["biggest"])
        for o in lines
        if "late" not in o
    ]
    assert windows == [
        ("ann", 0, 60, 2, 7, 4),
        ("bob", 0, 60, 2, 7, 5),
        ("ann", 60, 120, 2, 8, 7),
        ("bob", 60, 120, 1, 6, 6),
        ("ann", 120, 180, 1, 2, 2),
    ]
    assert [o["late"] for o in lines if "late" in o] == [
        {"user": "bob", "at": "2024-05-01T10:00:59Z", "amount": 9}
    ]
    assert "LateItem" in done.stderr


def test_the_orders_join_example_joins_each_order_with_its_payment_once():
    done = finished_example("orders_join")
    joined = sorted((json.loads(line) for line in done.stdout.splitlines()), key=str)
    assert (
        sorted(
            [
                {
                    "left": {
                        "order": "o1",
                        "customer": "c1",
                        "amount": 30,
                        "at": "2024-05-01T12:00:00Z",
                        "name": "Ada",
                        "country": "UK",
                    },
                    "right": {"payment": "p1", "order": "o1", "at": "2024-05-01T12:03:00Z"},
                },
                {
                    "left": {
                        "order": "o2",
                        "customer": "c2",
                        "amount": 12,
                        "at": "2024-05-01T12:05:00Z",
                        "name": "Brian",
                        "country": "FR",
                    },
                    "right": None,
                },
                {
                    # c9 is not in customers.csv: the order goes on as it is.
                    "left": {
                        "order": "o3",
                        "customer": "c9",
                        "amount": 99,
                        "at": "2024-05-01T12:20:00Z",
                    },
                    "right": {"payment": "p3", "order": "o3", "at": "2024-05-01T12:21:00Z"},
                },
            ],
            key=str,
        )
        == joined
    )
