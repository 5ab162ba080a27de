-- The preference graph as a long table: one labelled edge per (customer, item).
-- Duplicates: the latest observation wins (ties: the larger value).
-- Labels: own_mean -> like (+1) when value >= that customer's mean value (the paper's
-- rule for star ratings); positive -> +1 when value > 0 (0/1 clicks, thumbs);
-- purchase -> +1 for every edge (a purchase-only log: each row says only "chosen").
WITH ranked AS (
    SELECT
        customer_id,
        item_id,
        value,
        event,
        "timestamp",
        row_number() OVER (
            PARTITION BY customer_id, item_id
            ORDER BY "timestamp" DESC NULLS LAST, value DESC
        ) AS recency
    FROM raw_interactions
),
latest AS (
    SELECT customer_id, item_id, value, event, "timestamp"
    FROM ranked
    WHERE recency = 1
),
scored AS (
    SELECT *, avg(value) OVER (PARTITION BY customer_id) AS customer_mean_value
    FROM latest
)
SELECT
    customer_id,
    item_id,
    value,
    event,
    "timestamp",
    CAST(CASE
        WHEN $label_rule = 'own_mean' AND value >= customer_mean_value THEN 1
        WHEN $label_rule = 'positive' AND value > 0 THEN 1
        WHEN $label_rule = 'purchase' THEN 1
        ELSE -1
    END AS TINYINT) AS label
FROM scored
