"""The transforming step of the dir_to_kafka example."""

import os

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Describe(NanoStreamProcessor):
    """Turns a text file, as FileReader's ``FileData(path, data)``, into a JSON
    record: its name, its size and its text."""

    def process_item(self, message) -> dict:
        text = message.data
        return {
            "file": os.path.basename(message.path),
            "lines": len(text.splitlines()),
            "words": len(text.split()),
            "text": text,
        }
