-- Train / validation / test split of the edges, deterministic for a given seed.
-- Each customer's first edge (in a seeded hash order) always stays in train, so every
-- customer can be embedded; the rest fall into test / validation by a seeded hash.
-- split_hash is the engine's macro: the same number on DuckDB and Spark.
SELECT
    customer_id,
    item_id,
    label,
    CASE
        WHEN row_number() OVER (
            PARTITION BY customer_id ORDER BY split_hash(item_id, $seed), item_id
        ) = 1 THEN 'train'
        WHEN split_hash(customer_id, item_id, $seed) % 100 < $test_percent THEN 'test'
        WHEN split_hash(customer_id, item_id, $seed) % 100 < $test_percent + $validation_percent
            THEN 'validation'
        ELSE 'train'
    END AS split
FROM preference_edges
