CREATE TABLE IF NOT EXISTS orders (
    order_id    VARCHAR(64) PRIMARY KEY,
    customer    VARCHAR(200) NOT NULL,
    item_count  INTEGER NOT NULL,
    total_cents BIGINT NOT NULL
);
