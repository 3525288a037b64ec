"""The transforming step: one webhook body (an order) to one row of ``orders``."""


def order_row(order: dict) -> dict:
    """``{"id", "customer", "items": [{"price", "quantity"}]}`` to a row of ``orders``.

    Raises KeyError for an order without an id, which the pipeline skips
    into ``rejects.jsonl``.
    """
    items = order.get("items", [])
    return {
        "order_id": str(order["id"]),
        "customer": order.get("customer", ""),
        "item_count": sum(int(item.get("quantity", 1)) for item in items),
        "total_cents": sum(
            round(float(item["price"]) * 100) * int(item.get("quantity", 1)) for item in items
        ),
    }
