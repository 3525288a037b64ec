"""``nanostream run --watch``: good edits swap the running pipeline, losing nothing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import watchfiles

from nanostream._scaffold import scaffold
from nanostream._watch import watched
from nanostream.cli import main

NODES = """\
import attrs
from nanostream import NanoStreamProcessor

VERSION = "{version}"


@attrs.define
class Transform(NanoStreamProcessor):
    def process_item(self, message):
        return attrs.evolve(message, data=message.data.strip() + " " + VERSION)
"""


@contextlib.contextmanager
def watching(
    cwd: Path,
    log: Path,
    stdout: Path | None = None,
    extra: list[str] = (),
    env: dict[str, str] | None = None,
):
    """``nanostream run --watch pipeline.yaml`` in ``cwd``, its stderr in
    ``log``; killed on the way out if it is still running."""
    with log.open("w") as stderr, (stdout or Path(os.devnull)).open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nanostream", "run", "--watch", *extra, "pipeline.yaml"],
            cwd=cwd,
            stdout=out,
            stderr=stderr,
            env={**os.environ, "PYTHONWARNINGS": "error", **(env or {})},
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def by_input(outputs: dict[str, str]) -> dict[str, list[str]]:
    """The texts written for each input: FileWriter writes a second output
    of one input as ``NAME.1``."""
    found: dict[str, list[str]] = {}
    for name, text in sorted(outputs.items()):
        found.setdefault(re.sub(r"\.\d+$", "", name), []).append(text)
    return found


def complete(name: str, texts: list[str]) -> list[str]:
    """The versions that wrote the whole of ``name``: a file read while it
    was still being written is read again once it is closed."""
    return [text.rsplit(" ", 1)[1] for text in texts if text in (f"{name} v1", f"{name} v2")]


def waiting(inbox: Path) -> list[str]:
    """The files in ``inbox`` that the listener emits (not hidden ones)."""
    return [p.name for p in inbox.iterdir() if not p.name.startswith(".")]


def wait_for(predicate, what, process: subprocess.Popen, log: Path, timeout=30.0) -> None:
    """Poll until ``predicate()`` holds; ``what`` (or what it returns) names it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what() if callable(what) else what}:\n{log.read_text()}"
            )
        time.sleep(0.02)


def test_a_good_edit_swaps_the_pipeline_and_a_bad_one_keeps_it(tmp_path):
    folder = tmp_path / "pipeline"
    scaffold(folder)
    (folder / "nodes.py").write_text(NODES.format(version="v1"))
    inbox, outbox, done = folder / "inbox", folder / "outbox", folder / "done"
    log = tmp_path / "stderr.log"
    with watching(folder, log) as process:

        def said(text: str) -> bool:
            return log.read_text().count(text)

        dropped: list[str] = []

        def drop(name: str) -> None:
            (inbox / name).write_text(name)
            dropped.append(name)

        def written() -> dict[str, str]:
            if not outbox.exists():
                return {}
            # FileWriter's temporary files are hidden until renamed.
            return {p.name: p.read_text() for p in outbox.iterdir() if not p.name.startswith(".")}

        wait_for(lambda: said("watching pipeline.yaml"), "the watch", process, log)
        for number in range(5):
            drop(f"before-{number}")
        wait_for(lambda: len(written()) == 5, "v1's files", process, log)

        # A good edit: files keep arriving while the old version drains and
        # the new one starts.
        (folder / "nodes.py").write_text(NODES.format(version="v2"))
        number = 0
        while not said("reloaded"):
            drop(f"during-{number}")
            number += 1
            time.sleep(0.01)
            assert process.poll() is None, log.read_text()
        for number in range(5):
            drop(f"after-{number}")
        wait_for(lambda: not waiting(inbox), "an empty inbox", process, log)
        wait_for(
            lambda: all(complete(name, by_input(written()).get(name, [])) for name in dropped),
            lambda: f"every file written: {sorted(dropped)} to {sorted(written())}",
            process,
            log,
        )

        # A bad edit: the errors are printed, and the running version goes on.
        pipeline = folder / "pipeline.yaml"
        pipeline.write_text(pipeline.read_text().replace("FileReader", "FileRaeder"))
        wait_for(lambda: said("still running the previous version"), "errors", process, log)
        drop("after-bad-edit")
        wait_for(lambda: "after-bad-edit" in written(), "the last file", process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()

    report = log.read_text()
    assert "pipeline.yaml:14:12: error: node 'read': unknown class 'FileRaeder'" in report
    assert "(did you mean 'FileReader'?)" in report
    outputs = by_input(written())
    # Every file dropped was written whole under its own name, and moved to
    # done/. Delivery is at least once: a file that arrived as the new version
    # started may be written twice, the second time as NAME.1.
    assert sorted(outputs) == sorted(dropped)
    assert {re.sub(r"\.\d+$", "", p.name) for p in done.iterdir()} == set(dropped)
    assert sum(map(len, outputs.values())) - len(dropped) <= 3, outputs
    assert not waiting(inbox)
    versions = {name: complete(name, texts) for name, texts in outputs.items()}
    assert all(versions.values()), versions
    assert all(versions[name] == ["v1"] for name in dropped if name.startswith("before"))
    assert all(set(versions[name]) == {"v2"} for name in dropped if name.startswith("after"))
    assert any("v2" in versions[name] for name in dropped if name.startswith("during"))


def test_a_pipeline_that_fails_waits_for_a_fix(tmp_path):
    (tmp_path / "steps.py").write_text(
        "from nanostream import NanoStreamProcessor\n\n"
        "class Divide(NanoStreamProcessor):\n"
        "    def process_item(self, message):\n"
        "        return 10 / message\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        "node_sequence:\n"
        "  - {name: numbers, class: SequenceEmitter, sequence: [5, 0]}\n"
        "  - {name: divide, class: 'steps:Divide', parents: [numbers]}\n"
        "  - {name: print, class: PrintStreamProcessor, parents: [divide]}\n"
    )
    log, out = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with watching(tmp_path, log, out) as process:
        wait_for(lambda: "watching pipeline.yaml" in log.read_text(), "the watch", process, log)
        wait_for(lambda: "waiting for a change" in log.read_text(), "the failure", process, log)
        assert "node 'divide' failed in process_item: ZeroDivisionError" in log.read_text()
        (tmp_path / "steps.py").write_text(
            (tmp_path / "steps.py").read_text().replace("10 / message", "10 / (message or 1)")
        )
        wait_for(lambda: "pipeline finished" in log.read_text(), "the fixed run", process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    # the fixed version ran every item; the failed one may have printed its first
    assert out.read_text() in ("2.0\n10.0\n", "2.0\n2.0\n10.0\n")


def test_what_is_watched(tmp_path):
    tmp_path = tmp_path / ".hidden" / "project"  # only what is inside the folder counts
    accept = watched(tmp_path / "pipeline.yaml")
    assert accept(watchfiles.Change.modified, str(tmp_path / "pipeline.yaml"))
    assert accept(watchfiles.Change.added, str(tmp_path / "steps.py"))
    assert accept(watchfiles.Change.modified, str(tmp_path / "pkg" / "mod.py"))
    assert not accept(watchfiles.Change.added, str(tmp_path / "inbox" / "data.json"))
    assert not accept(watchfiles.Change.added, str(tmp_path / "other.yaml"))
    assert not accept(watchfiles.Change.added, str(tmp_path / "__pycache__" / "steps.pyc"))
    assert not accept(watchfiles.Change.added, str(tmp_path / ".venv" / "lib" / "x.py"))


def test_a_broken_pipeline_is_not_started(tmp_path, capsys):
    (tmp_path / "pipeline.yaml").write_text(
        "node_sequence:\n  - {name: numbers, class: SequenceEmiter}\n"
    )
    assert main(["run", "--watch", str(tmp_path / "pipeline.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.endswith("pipeline.yaml\n")  # nanostream: 1 error in .../pipeline.yaml
    assert "pipeline.yaml:2:28: error: node 'numbers': unknown class 'SequenceEmiter'" in err


def test_one_metrics_server_serves_each_version(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "node_sequence:\n"
        "  - {name: ticks, class: ConstantEmitter, delay: 0.01}\n"
        "  - {name: sink_a, class: BlackHole, parents: [ticks]}\n"
    )
    log = tmp_path / "stderr.log"
    with watching(tmp_path, log, extra=["--metrics-port", "0"]) as process:
        wait_for(lambda: "watching pipeline.yaml" in log.read_text(), "the watch", process, log)
        [url] = re.findall(r"serving metrics on (\S+)", log.read_text())

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()

        assert 'node="sink_a"' in scrape()
        config.write_text(config.read_text().replace("sink_a", "sink_b"))
        wait_for(lambda: "reloaded" in log.read_text(), "the reload", process, log)
        metrics = scrape()
        assert 'node="sink_b"' in metrics
        assert 'node="sink_a"' not in metrics
        with urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    # off a terminal, each version's summary is printed when it ends
    report = log.read_text()
    assert re.search(r"\nsink_a +BlackHole ", report)
    assert re.search(r"\nsink_b +BlackHole ", report)


KAFKA_PIPELINE = """\
node_sequence:
  - name: consume
    class: KafkaConsumer
    topics: [{source}]
    group_id: {group}
    auto_offset_reset: earliest
    consumer_config:
      max_poll_interval_ms: 3000
      session_timeout_ms: 6000
      heartbeat_interval_ms: 1000
  - name: tag
    class: steps:Tag
    parents: [consume]
  - name: produce
    class: KafkaProducer
    topic: {target}
    parents: [tag]
"""

STEPS = """\
from nanostream import NanoStreamProcessor

class Tag(NanoStreamProcessor):
    def process_item(self, message):
        return {{"n": message["n"], "version": "{version}"}}
"""


def test_a_swap_resumes_from_the_committed_kafka_offsets(tmp_path, broker):
    from kafka_testbed import TopicReader, create_topic, produce_json, unique_name

    source, target = create_topic(broker, 2, "watch-in"), create_topic(broker, 1, "watch-out")
    (tmp_path / "pipeline.yaml").write_text(
        KAFKA_PIPELINE.format(source=source, target=target, group=unique_name("watch"))
    )
    (tmp_path / "steps.py").write_text(STEPS.format(version="v1"))
    produce_json(broker, source, [{"n": n} for n in range(20)], partitions=2)
    reader = TopicReader(broker, target)
    log = tmp_path / "stderr.log"
    try:
        # kafka-python's import warns of a deprecated importlib call.
        env = {"BOOTSTRAP_SERVERS": broker, "PYTHONWARNINGS": "default"}
        with watching(tmp_path, log, env=env) as process:

            def numbers(values) -> set[int]:
                return {value["n"] for value in values}

            def read_until(predicate, what: str) -> list:
                try:
                    return reader.read_until(predicate, what, [process])
                except AssertionError as error:
                    raise AssertionError(f"{error}:\n{log.read_text()}") from None

            read_until(lambda v: numbers(v) >= set(range(20)), "v1")
            (tmp_path / "steps.py").write_text(STEPS.format(version="v2"))
            n = 20
            while "reloaded" not in log.read_text():
                assert process.poll() is None, log.read_text()
                produce_json(broker, source, [{"n": n}], partitions=2)
                n += 1
                time.sleep(0.05)
            produce_json(broker, source, [{"n": m} for m in range(n, n + 20)], partitions=2)
            sent = set(range(n + 20))
            values = read_until(lambda v: numbers(v) >= sent, "every record")
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        reader.close()
    # Every record was handled, by one version or the other (at least once:
    # records in flight when the old version drained may be handled again).
    assert numbers(values) == sent
    versions: dict[int, set[str]] = {}
    for value in values:
        versions.setdefault(value["n"], set()).add(value["version"])
    assert all(versions[n] == {"v1"} for n in range(20))
    assert all(versions[m] == {"v2"} for m in range(n, n + 20))
    assert len(values) - len(sent) <= 4, sorted(values, key=lambda v: v["n"])


def test_only_the_users_own_modules_are_reloaded(tmp_path, monkeypatch):
    from nanostream._imports import forget_modules

    installed = tmp_path / ".venv" / "lib" / "site-packages"
    for folder, name in [(tmp_path, "mine_a"), (tmp_path / "pkg", "mine_b"), (installed, "lib_c")]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.py").write_text("VALUE = 1\n")
        monkeypatch.syspath_prepend(str(folder))
    import lib_c
    import mine_a
    import mine_b

    assert sorted(forget_modules(tmp_path)) == ["mine_a", "mine_b"]
    assert "lib_c" in sys.modules
    assert "mine_a" not in sys.modules
    del sys.modules["lib_c"]
    assert (mine_a.VALUE, mine_b.VALUE, lib_c.VALUE) == (1, 1, 1)
    # NanoStream's own modules stay, even from a checkout inside the folder
    checkout = types.ModuleType("nanostream.from_a_checkout")
    checkout.__file__ = str(tmp_path / "nanostream" / "from_a_checkout.py")
    monkeypatch.setitem(sys.modules, checkout.__name__, checkout)
    assert forget_modules(tmp_path) == []
    assert sys.modules[checkout.__name__] is checkout
