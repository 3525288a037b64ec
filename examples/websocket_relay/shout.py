"""The relay's transformation, a node beside the pipeline file."""

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Shout(NanoStreamProcessor):
    """Upper-cases each text message and adds an exclamation mark."""

    mark: str = attrs.field(default="!", metadata={"description": "What to end with."})

    def process_item(self, message: str) -> str:
        return message.upper() + self.mark
