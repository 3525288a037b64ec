"""Node classes used by the broken-config corpus."""

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class Scaler(NanoStreamProcessor):
    """Multiplies each item by a factor."""

    factor: float = attrs.field(metadata={"description": "What to multiply by."})
    label: str = "scaled"

    @factor.validator
    def _check_factor(self, attribute, value):
        if value == 0:
            raise ValueError("factor must not be zero")

    def process_item(self, message):
        return message * self.factor


class NotANode:
    pass


class Opaque:
    """A type that cannot be built from YAML."""

    def __init__(self, handle: int) -> None:
        self.handle = handle


@attrs.define
class Holder(NanoStreamProcessor):
    """Holds something that cannot come from a configuration file."""

    thing: Opaque

    def process_item(self, message):
        return message


class Undecorated(NanoStreamProcessor):
    """Declares a field but forgot @attrs.define."""

    factor: float = 2.0

    def process_item(self, message):
        return message * self.factor


@attrs.define
class Misspelt(NanoStreamProcessor):
    """Its one hook is misspelt, so the runtime would never call it."""

    def proces_item(self, message):
        return message


@attrs.define
class NoHooks(NanoStreamProcessor):
    """Neither a source nor a processor."""

    def transform(self, message):
        return message


@attrs.define
class Helpers(NanoStreamProcessor):
    """A working node whose helpers look like hooks, and one misspelt optional hook."""

    def process_item(self, message):
        return list(self.generator(message))

    def generator(self, message):
        yield message

    def finished(self):
        return True

    def teardwon(self):
        pass
