-- Histories up to $cutoff for the lookalike model, in time order, cut to the last
-- $max_events. With $before_rule, a core customer's history stops just before the
-- interaction that completed the rule, so the model learns what precedes meeting it
-- (what a non-core customer can show), not the rule itself.
WITH events AS (
    SELECT
        customer_id,
        item_id,
        event,
        value,
        "timestamp",
        file_order,
        matches,
        sum(CAST(matches AS INTEGER)) OVER (
            PARTITION BY customer_id ORDER BY "timestamp", file_order
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS matches_so_far
    FROM lookalike_rule_events
    WHERE "timestamp" <= $cutoff
),
labelled AS (
    SELECT *, max(matches_so_far) OVER (PARTITION BY customer_id) >= $min_count AS core
    FROM events
),
kept AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY customer_id ORDER BY "timestamp", file_order)
            AS full_position,
        count(*) OVER (PARTITION BY customer_id) AS full_count
    FROM labelled
    WHERE NOT ($before_rule AND core AND matches_so_far >= $min_count)
)
SELECT
    customer_id,
    CAST(full_position - greatest(full_count - $max_events, 0) AS INTEGER) AS position,
    item_id,
    event,
    value,
    "timestamp",
    matches,
    core
FROM kept
WHERE full_position > full_count - $max_events
ORDER BY customer_id, position
