"""The records of the clicks file, as the Window node reads them."""


def record(line):
    """The JSON object of one line of clicks.jsonl (FileReader sends a FileData)."""
    return line.data


def late(letter):
    """What to show of a click the window refused: the click itself."""
    return {"late": letter.item}
