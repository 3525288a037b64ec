"""Configuration errors, each tied to a place in the file."""

from __future__ import annotations

import attrs


@attrs.frozen
class ConfigError:
    """One thing wrong with a configuration file, at ``line``:``col`` (1-based)."""

    path: str
    line: int
    col: int
    message: str
    source_line: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: error: {self.message}"

    def format(self) -> str:
        """The error, then the offending source line with a caret under the column."""
        text = str(self)
        if self.source_line is not None:
            line = self.source_line.rstrip("\n")
            lead = "".join(c if c == "\t" else " " for c in line[: max(self.col - 1, 0)])
            text += f"\n    {line}\n    {lead}^"
        return text


class ConfigErrors(ValueError):
    """A configuration that cannot be loaded: every error found."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(error.format() for error in errors))
