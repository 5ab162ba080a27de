-- The business rule per customer, for every customer with an interaction up to $cutoff.
-- Reads the table lookalike_rule_events (one row per interaction with a boolean `matches`,
-- the rule's SQL predicate; assets/unicon.py creates it from the configured rule).
--   core              the rule is met by the cutoff: at least $min_count matches before it
--   joins_core_after  not core at the cutoff, but meets the rule by the end of the data
--   new_at_cutoff     first seen less than $new_customer_days days before the cutoff
--                     (never sampled as a negative: too new to have shown anything)
--   rule_item_events_before  interactions before the cutoff with items that some
--                     rule-matching interaction concerns (the heuristic's tie-break)
WITH rule_items AS (
    SELECT DISTINCT item_id
    FROM lookalike_rule_events
    WHERE matches AND "timestamp" <= $cutoff
),
per_customer AS (
    SELECT
        e.customer_id,
        count(*) FILTER (WHERE e."timestamp" <= $cutoff) AS events_before,
        count(*) FILTER (WHERE e.matches AND e."timestamp" <= $cutoff) AS matches_before,
        count(*) FILTER (WHERE e.matches AND e."timestamp" > $cutoff) AS matches_after,
        count(*) FILTER (
            WHERE e."timestamp" <= $cutoff AND r.item_id IS NOT NULL
        ) AS rule_item_events_before,
        min(e."timestamp") AS first_seen
    FROM lookalike_rule_events AS e
    LEFT JOIN rule_items AS r USING (item_id)
    GROUP BY e.customer_id
)
SELECT
    customer_id,
    events_before,
    matches_before,
    matches_after,
    rule_item_events_before,
    first_seen,
    matches_before >= $min_count AS core,
    matches_before < $min_count AND matches_before + matches_after >= $min_count
        AS joins_core_after,
    first_seen > $cutoff - INTERVAL 1 DAY * CAST($new_customer_days AS INTEGER)
        AS new_at_cutoff
FROM per_customer
WHERE events_before > 0
ORDER BY customer_id
