"""The transforming step of the kafka_to_kafka example."""

import attrs

from nanostream import NanoStreamProcessor


@attrs.define
class OrderTotal(NanoStreamProcessor):
    """Sums an order's lines: ``{"order", "lines": [{"price", "quantity"}]}``
    becomes ``{"order", "total"}``, rounded to ``decimals``."""

    decimals: int = 2

    def process_item(self, message: dict) -> dict:
        total = sum(line["price"] * line["quantity"] for line in message["lines"])
        return {"order": message["order"], "total": round(total, self.decimals)}
