-- Each customer's interactions in time order, cut to the last $max_events, with the
-- item's attributes (every raw_items column: category or genres, brand, price, ...).
-- Order: timestamp, then the order of the rows in the source (file_order), which is also
-- the whole order when a source has no timestamps at all (files without the column). A
-- mix of dated and undated events is refused before this model runs (assets/unicon.py).
-- position runs 1..n_events within a customer (n_events <= $max_events).
-- UNICON trains in memory: on the customers of edge_sample (all of them, or a seeded
-- sample of in_memory_customers when there are more).
WITH items AS (
    -- item ids are unique (raw_items' blocking check): one row per id, so the join
    -- never multiplies an event whatever the items table holds
    SELECT * EXCLUDE (item_rank)
    FROM (
        SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY item_id) AS item_rank
        FROM raw_items
    ) AS numbered
    WHERE item_rank = 1
),
ordered AS (
    SELECT
        customer_id,
        item_id,
        event,
        value,
        "timestamp",
        row_number() OVER (
            PARTITION BY customer_id ORDER BY "timestamp" NULLS LAST, file_order
        ) AS full_position,
        count(*) OVER (PARTITION BY customer_id) AS full_count
    FROM raw_interactions
    WHERE customer_id IS NOT NULL AND item_id IS NOT NULL
        AND customer_id IN (SELECT customer_id FROM edge_sample)
)
SELECT
    o.customer_id,
    CAST(o.full_position - greatest(o.full_count - $max_events, 0) AS INTEGER) AS position,
    CAST(least(o.full_count, $max_events) AS INTEGER) AS n_events,
    o.item_id,
    o.event,
    o.value,
    o."timestamp",
    i.* EXCLUDE (item_id)
FROM ordered AS o
LEFT JOIN items AS i USING (item_id)
WHERE o.full_position > o.full_count - $max_events
ORDER BY o.customer_id, position
