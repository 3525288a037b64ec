"""Feeding watched folders as producers do, a few files at a time, and
reading back what a pipeline appended to a JSON Lines file: for tests that
kill a pipeline with SIGKILL and start it again."""

import json
from pathlib import Path


class InboxFeeder:
    """Files of JSON records to drop into ``inbox``, in order, each written
    whole beside it and renamed in; a file is *done* once the pipeline has
    deleted it (``when_done: delete``: a checkpoint covers it)."""

    def __init__(self, inbox: Path, files: dict[str, list[dict]]) -> None:
        self.inbox = inbox
        self.files = files
        self.waiting = list(files)
        inbox.mkdir(parents=True, exist_ok=True)

    def drop(self) -> None:
        name = self.waiting.pop(0)
        staged = self.inbox.parent / f".{self.inbox.name}-{name}"
        staged.write_text("".join(json.dumps(record) + "\n" for record in self.files[name]))
        staged.rename(self.inbox / name)

    def done(self) -> set[str]:
        there = {path.name for path in self.inbox.iterdir()}
        return set(self.files) - set(self.waiting) - there

    def keep_fed(self, in_flight: int = 3) -> None:
        """Drop the next file if fewer than ``in_flight`` are in the inbox."""
        dropped = len(self.files) - len(self.waiting)
        if self.waiting and dropped - len(self.done()) < in_flight:
            self.drop()

    def drop_all(self) -> None:
        while self.waiting:
            self.drop()


def appended(path: Path) -> list[dict]:
    """The records a pipeline appended to the JSON Lines file ``path`` so far."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]
