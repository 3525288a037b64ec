"""A watched inbox under what editors, bursts, new folders, overflows, watch
limits and kill -9 do to it: real files, real inotify, real processes."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_cli import wait_while_running
from test_files import running, watching

import nanostream as ns
from nanostream.nodes.directory import WatchdogDirectoryListener
from nanostream.nodes.files import FileReader, FileWriter


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def inbox_to_outbox(inbox: Path, outbox: Path, body, **listener) -> None:
    """Run watch -> FileReader -> FileWriter(outbox) while ``body()`` runs."""
    graph = ns.NanoStreamGraph("inbox")
    graph.add("watch", WatchdogDirectoryListener(watchdog_path=str(inbox), **listener))
    graph.add("read", FileReader(), ["watch"])
    graph.add("write", FileWriter(path=str(outbox) + "/", fsync=False), ["read"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            run = await nursery.start(ns.run_graph, graph)
            await body()
            run.stop()


async def wait_for(predicate, what: str) -> None:
    with trio.fail_after(20):
        while not predicate():
            await trio.sleep(0.01)


def contents(folder: Path) -> dict[str, str]:
    """The files in ``folder`` and what they hold, less hidden temporaries."""
    if not folder.exists():
        return {}
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith(".")}


async def test_editor_saves_emit_each_saved_version_once_and_no_backup(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()

    async def body() -> None:
        (inbox / "notes.txt").write_text("v1")
        await wait_for(lambda: "notes.txt" in contents(outbox), "v1")
        # vim (writebackup): test file 4913, rename to the backup, write
        # anew, delete the backup.
        (inbox / "4913").write_text("")
        os.unlink(inbox / "4913")
        os.rename(inbox / "notes.txt", inbox / "notes.txt~")
        (inbox / ".notes.txt.swp").write_text("swap")
        (inbox / "notes.txt").write_text("v2")
        os.unlink(inbox / "notes.txt~")
        # gedit: a hidden temporary renamed over the file.
        (inbox / ".goutputstream-ABC123").write_text("doc v1")
        os.rename(inbox / ".goutputstream-ABC123", inbox / "doc.txt")
        # A backup left in place, emacs' autosave, Office's lock file.
        (inbox / "report.txt~").write_text("old")
        (inbox / "#report.txt#").write_text("autosave")
        (inbox / "~$report.docx").write_text("lock")
        (inbox / "zz_sentinel.txt").write_text("s")
        await wait_for(lambda: "zz_sentinel.txt" in contents(outbox), "the sentinel")

    await inbox_to_outbox(inbox, outbox, body)
    assert contents(outbox) == {
        "notes.txt": "v1",
        "notes.1.txt": "v2",
        "doc.txt": "doc v1",
        "zz_sentinel.txt": "s",
    }


async def test_ignoring_editor_files_can_be_turned_off(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    async def body(receive):
        (inbox / "notes.txt~").write_text("backup")
        assert await receive.receive() == str(inbox / "notes.txt~")

    await watching(WatchdogDirectoryListener(watchdog_path=str(inbox), ignore_patterns=[]), body)


PIPELINE = """\
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox{listener}
  - name: read
    class: FileReader
    parents: [watch]
  - name: write
    class: FileWriter
    parents: [read]
    path: outbox/
    fsync: false
"""


WHEN_DONE = {
    "keep": "",
    "delete": "\n    when_done: delete",
    "move": "\n    when_done: move\n    done_dir: done",
}


@pytest.mark.parametrize("when_done", list(WHEN_DONE))
def test_files_deleted_before_they_are_read_do_not_stop_the_default_pipeline(
    tmp_path: Path, when_done: str
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    # With existing, a file written before the watch starts is emitted too.
    listener = "\n    existing: true" + WHEN_DONE[when_done]
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(listener=listener))
    kept = {f"keep{i:02}.txt": f"keep {i}" for i in range(39)}
    with running(tmp_path) as process:
        (inbox / "first.txt").write_text("first")
        wait_while_running(process, lambda: (outbox / "first.txt").exists(), "first")
        for i in range(49):
            name = f"keep{i:02}.txt" if i < 39 else f"gone{i:02}.txt"
            (inbox / name).write_text(kept.get(name, "gone"))
            if name.startswith("gone"):
                os.unlink(inbox / name)
        (inbox / "zz_last.txt").write_text("last")
        wait_while_running(process, lambda: (outbox / "zz_last.txt").exists(), "the last file")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    # A file deleted at once may still have been read first: it was whole.
    out = contents(outbox)
    gone = {name for name in out if name.startswith("gone")}
    assert out == {
        "first.txt": "first",
        **kept,
        "zz_last.txt": "last",
        **dict.fromkeys(gone, "gone"),
    }


def test_a_file_written_while_a_scan_looks_at_it_is_emitted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scan takes the file's version, then asks whether it is still open
    # for writing; written and closed in between, it is emitted by its
    # close event alone, in the version it has, not by the scan too.
    from nanostream.nodes import directory

    path = tmp_path / "late.txt"
    path.write_text("")
    send, receive = trio.open_memory_channel(0)
    watch = directory._Watch(str(tmp_path), None, send, receive)

    def written_meanwhile(name: str) -> bool:
        Path(name).write_text("late")
        return False

    monkeypatch.setattr(directory, "_being_written", written_meanwhile)
    found: list = []
    watch.look_at(str(path), True, found, [])
    assert found == []
    watch.look_at(str(path), False, found, [])
    assert [name for name, _ in found] == [str(path)]
    assert found[0][1][2] == len("late")


UNREADABLE = (
    PIPELINE.format(
        listener="\n    existing: true\n    on_error: skip\n    dead_letter: rejected{when_done}"
    )
    + """\
  - name: rejected
    class: FileWriter
    path: rejected.jsonl
"""
)


def in_user_namespace(command: list[str], watch_limit: int | None = None) -> list[str]:
    """``command`` run in a user namespace of its own. Without capabilities
    over the files outside, even root is held to their permission bits;
    ``watch_limit`` sets that namespace's inotify watch limit, which no one
    else's watches count against."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to run a command in a user namespace")
    if watch_limit is None:
        prefix = ["unshare", "--user"]
    else:
        shell = f'echo {watch_limit} > /proc/sys/user/max_inotify_watches && exec "$@"'
        prefix = ["unshare", "--user", "--map-root-user", "sh", "-c", shell, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot run a command in a user namespace: {probe.stderr!r}")
    return [*prefix, *command]


NANOSTREAM_RUN = [sys.executable, "-m", "nanostream", "run", "pipeline.yaml"]


@pytest.mark.parametrize("when_done", list(WHEN_DONE))
def test_an_unreadable_file_is_rejected_under_the_listener_policy(
    tmp_path: Path, when_done: str
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (tmp_path / "pipeline.yaml").write_text(UNREADABLE.format(when_done=WHEN_DONE[when_done]))
    with running(tmp_path, in_user_namespace(NANOSTREAM_RUN)) as process:
        (inbox / "first.txt").write_text("first")
        wait_while_running(process, lambda: (outbox / "first.txt").exists(), "first")
        secret = inbox / "secret.txt"
        with open(secret, "w", opener=lambda path, flags: os.open(path, flags, 0)) as f:
            f.write("secret")
        (inbox / "open.txt").write_text("open")
        wait_while_running(process, lambda: (outbox / "open.txt").exists(), "open.txt")
        rejected = tmp_path / "rejected.jsonl"
        wait_while_running(process, lambda: bool(lines_of(rejected)), "the rejection")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert contents(outbox) == {"first.txt": "first", "open.txt": "open"}
    (letter,) = lines_of(rejected)
    assert '"node": "watch"' in letter and "PermissionError" in letter
    assert str(secret) in letter
    # Skipped, it is done with like the others.
    left = {"keep": {"first.txt", "open.txt", "secret.txt"}, "delete": set(), "move": set()}
    assert set(os.listdir(inbox)) == left[when_done]
    if when_done == "move":
        assert sorted(os.listdir(tmp_path / "done")) == ["first.txt", "open.txt", "secret.txt"]


RECURSIVE = """\
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    recursive: true
    existing: true
  - name: write
    class: FileWriter
    parents: [watch]
    path: seen.txt
    fsync: false
"""


def test_files_of_a_new_folder_are_emitted_once_each(tmp_path: Path) -> None:
    inbox, seen = tmp_path / "inbox", tmp_path / "seen.txt"
    inbox.mkdir()
    (tmp_path / "pipeline.yaml").write_text(RECURSIVE)
    with running(tmp_path) as process:
        (inbox / "first.txt").write_text("1")
        wait_while_running(process, lambda: bool(lines_of(seen)), "the first file")
        # Stopped, the pipeline cannot watch a new folder before files are
        # written into it: they are closed before it has a watch.
        process.send_signal(signal.SIGSTOP)
        try:
            # A nested folder and a file in it at once; an unzip: a folder
            # and five files written right after it.
            os.makedirs(inbox / "a" / "b")
            (inbox / "a" / "b" / "new.txt").write_text("new")
            (inbox / "zip").mkdir()
            for i in range(5):
                (inbox / "zip" / f"f{i}.txt").write_text(f"{i}")
            # A folder moved in, with a subfolder.
            outside = tmp_path / "outside"
            (outside / "sub").mkdir(parents=True)
            (outside / "sub" / "moved.txt").write_text("moved")
            os.rename(outside, inbox / "moved")
        finally:
            process.send_signal(signal.SIGCONT)
        # And once it runs again, a folder made and filled at full speed.
        os.makedirs(inbox / "c" / "d")
        for i in range(5):
            (inbox / "c" / "d" / f"g{i}.txt").write_text(f"{i}")
        wait_while_running(process, lambda: len(lines_of(seen)) >= 13, "the files")
        (inbox / "zz_sentinel").write_text("s")
        wait_while_running(process, lambda: lines_of(seen)[-1].endswith("zz_sentinel"), "end")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert sorted(lines_of(seen)) == sorted(
        [
            str(inbox / "first.txt"),
            str(inbox / "a" / "b" / "new.txt"),
            *(str(inbox / "zip" / f"f{i}.txt") for i in range(5)),
            str(inbox / "moved" / "sub" / "moved.txt"),
            *(str(inbox / "c" / "d" / f"g{i}.txt") for i in range(5)),
            str(inbox / "zz_sentinel"),
        ]
    )


async def test_a_tree_deeper_than_the_recursion_limit_is_watched(tmp_path: Path) -> None:
    # Made and removed level by level: pathlib's and shutil's own walks
    # recurse, and would fail on it too.
    inbox = tmp_path / "inbox"
    levels = [str(inbox)]
    for _ in range(sys.getrecursionlimit() + 200):
        levels.append(os.path.join(levels[-1], "d"))
    for level in levels:
        os.mkdir(level)
    deepest = Path(levels[-1])

    async def body(receive):
        (deepest / "bottom.txt").write_text("b")
        assert await receive.receive() == str(deepest / "bottom.txt")

    try:
        listener = WatchdogDirectoryListener(
            watchdog_path=str(inbox), recursive=True, existing=True
        )
        await watching(listener, body)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(deepest / "bottom.txt")
        for level in reversed(levels):
            os.rmdir(level)


def test_too_many_folders_for_the_watch_limit_fail_the_start_clearly(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / "inbox" / f"folder{i}").mkdir(parents=True)
    (tmp_path / "pipeline.yaml").write_text(RECURSIVE)
    command = in_user_namespace(NANOSTREAM_RUN, watch_limit=5)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "fs.inotify.max_user_watches" in result.stderr
    assert "sysctl fs.inotify.max_user_watches=" in result.stderr
    assert "RecursionError" not in result.stderr


def test_a_folder_made_beyond_the_watch_limit_stops_the_pipeline_clearly(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "pipeline.yaml").write_text(RECURSIVE)
    with running(tmp_path, in_user_namespace(NANOSTREAM_RUN, watch_limit=3)) as process:
        (inbox / "first.txt").write_text("1")
        wait_while_running(process, lambda: bool(lines_of(tmp_path / "seen.txt")), "first")
        for i in range(5):
            (inbox / f"folder{i}").mkdir()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "fs.inotify.max_user_watches" in err


OVERFLOW = """\
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
  - name: write
    class: FileWriter
    parents: [watch]
    path: seen.txt
    fsync: false
"""


def test_after_an_inotify_overflow_every_file_is_emitted_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "pipeline.yaml").write_text(OVERFLOW)
    seen = tmp_path / "seen.txt"
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        queue = int(f.read())
    files = queue + 2000
    names = [str(inbox / f"f{i:06}") for i in range(files)]
    with running(tmp_path) as process:
        (inbox / "first").write_text("")
        wait_while_running(process, lambda: bool(lines_of(seen)), "the first file")
        # Stopped, the pipeline reads no events while more files are written
        # than the kernel queues for it.
        process.send_signal(signal.SIGSTOP)
        try:
            for name in names:
                with open(name, "w"):
                    pass
        finally:
            process.send_signal(signal.SIGCONT)
        wait_while_running(process, lambda: len(lines_of(seen)) >= files + 1, "all files", 60)
        (inbox / "zz_sentinel").write_text("")
        wait_while_running(process, lambda: lines_of(seen)[-1].endswith("zz_sentinel"), "end")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    emitted = lines_of(seen)
    assert sorted(emitted) == sorted([str(inbox / "first"), *names, str(inbox / "zz_sentinel")])
    assert "inotify queue overflowed" in err


RESTART = """\
node_sequence:
  - name: watch
    class: WatchdogDirectoryListener
    watchdog_path: inbox
    existing: true
    when_done: delete
  - name: read
    class: FileReader
    parents: [watch]
    max_batch: 100
    buffer_size: 1
  - name: slow
    class: Throttle
    parents: [read]
    rate: 2000
    max_batch: 100
    buffer_size: 1
  - name: write
    class: FileWriter
    parents: [slow]
    path: outbox/
    fsync: false
"""


def test_a_big_start_up_scan_killed_repeats_only_what_was_in_flight(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (tmp_path / "pipeline.yaml").write_text(RESTART)
    inputs = {f"f{i:05}.txt": f"file {i}" for i in range(2000)}
    for name, content in inputs.items():
        (inbox / name).write_text(content)
    with running(tmp_path) as process:
        wait_while_running(process, lambda: len(contents(outbox)) >= 800, "800 written", 60)
        process.send_signal(signal.SIGKILL)
        process.communicate()
    written = contents(outbox)
    left = set(os.listdir(inbox))
    # Nothing lost: each file gone from the inbox was written out.
    assert {inputs[name] for name in set(inputs) - left} <= set(written.values())
    # Done a batch at a time: of the files written, only those of the
    # last batches were not deleted yet, and will be read again (all
    # of them were, when the scan was done only once all emitted).
    repeated = {name for name in left if name in written}
    assert len(repeated) <= 400, len(repeated)
    assert len(left) == len(inputs) - len(written) + len(repeated)
    with running(tmp_path) as process:
        wait_while_running(process, lambda: not os.listdir(inbox), "the inbox to empty", 60)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    again = contents(outbox)
    assert set(again.values()) == set(inputs.values())
    assert len(again) == len(inputs) + len(repeated)


async def test_each_file_deleted_at_once_is_either_emitted_or_counted_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    emitted = []

    async def body(receive):
        for i in range(50):
            (inbox / f"brief{i:02}.txt").write_text("here and gone")
            os.unlink(inbox / f"brief{i:02}.txt")
        (inbox / "zz_sentinel").write_text("s")
        while (path := await receive.receive()) != str(inbox / "zz_sentinel"):
            emitted.append(path)

    with caplog.at_level("DEBUG", logger="nanostream"):
        await watching(WatchdogDirectoryListener(watchdog_path=str(inbox)), body)
    gone = [r.path for r in caplog.records if getattr(r, "event", "") == "file_gone"]
    (summary,) = [r for r in caplog.records if getattr(r, "event", "") == "files_gone"]
    assert gone and summary.count == len(gone)
    assert sorted(emitted + gone) == [str(inbox / f"brief{i:02}.txt") for i in range(50)]


@pytest.mark.parametrize("where", ["existing", "new folder"])
async def test_a_file_still_being_written_when_scanned_is_emitted_once_closed(
    tmp_path: Path, where: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = inbox if where == "existing" else inbox / "new"
    writing = None

    def start_writing() -> None:
        nonlocal writing
        folder.mkdir(exist_ok=True)
        writing = open(folder / "slow.txt", "w")  # noqa: SIM115 - kept open across awaits
        writing.write("part 1")
        writing.flush()
        (folder / "done.txt").write_text("done")

    if where == "existing":
        start_writing()

    async def body(receive):
        if where == "new folder":
            start_writing()
        # The scan emits the closed file, not the open one.
        assert await receive.receive() == str(folder / "done.txt")
        writing.write(", part 2")
        writing.close()
        assert await receive.receive() == str(folder / "slow.txt")
        (inbox / "zz_sentinel").write_text("s")
        assert await receive.receive() == str(inbox / "zz_sentinel")

    listener = WatchdogDirectoryListener(watchdog_path=str(inbox), recursive=True, existing=True)
    try:
        await watching(listener, body)
    finally:
        if writing is not None:
            writing.close()


LEASE_STRESS = """
import subprocess, sys, time
from nanostream.nodes import directory
path = sys.argv[1]
writer = subprocess.Popen([sys.executable, "-c", f'''
import time
end = time.monotonic() + 1.5
while time.monotonic() < end:
    open({path!r}, "a").close()
'''])
answers = set()
end = time.monotonic() + 1.5
while time.monotonic() < end:
    answers.add(directory._being_written(path))
writer.wait()
print(sorted(answers))
"""


def test_a_writer_breaking_the_scan_s_lease_does_not_end_the_pipeline(tmp_path: Path) -> None:
    # Whether a scanned file is still being written is asked with a lease; a
    # writer opening the file meanwhile breaks it, and Linux signals the
    # listener's process, which SIGIO (the default signal) would end.
    path = tmp_path / "contended.txt"
    path.write_text("x")
    result = subprocess.run(
        [sys.executable, "-c", LEASE_STRESS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result
    assert result.stdout.strip() == "[False, True]"
