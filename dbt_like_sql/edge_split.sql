-- Train / validation / test split of the edges, deterministic for a given seed.
-- Each customer's first edge (in a seeded hash order) always stays in train, so every
-- customer can be embedded; the rest fall into test / validation by a seeded hash.
-- split_hash is the engine's macro: the same number on DuckDB and Spark. Each edge's
-- two hashes are computed once (md5 is most of this model's cost).
WITH hashed AS (
    SELECT
        customer_id,
        item_id,
        label,
        split_hash(item_id, $seed) AS item_draw,
        split_hash(customer_id, item_id, $seed) % 100 AS edge_draw
    FROM preference_edges
)
SELECT
    customer_id,
    item_id,
    label,
    CASE
        WHEN row_number() OVER (
            PARTITION BY customer_id ORDER BY item_draw, item_id
        ) = 1 THEN 'train'
        WHEN edge_draw < $test_percent THEN 'test'
        WHEN edge_draw < $test_percent + $validation_percent THEN 'validation'
        ELSE 'train'
    END AS split
FROM hashed
