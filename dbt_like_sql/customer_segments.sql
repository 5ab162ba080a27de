-- Step 3 at scale: every customer's segment, by a range join of the embedding to the
-- clusters' value ranges (segment_bounds: lower < embedding <= upper, NULL at the open
-- ends; written by assets/segments.py from core/value_segments.py), with the run that
-- segmented them and each customer's number of preference edges at the time.
WITH fitted AS (
    SELECT customer_id, CAST(count(*) AS BIGINT) AS fitted_edges
    FROM preference_edges
    GROUP BY customer_id
)
SELECT
    e.customer_id,
    b.segment,
    e.embedding,
    CAST($run_id AS VARCHAR) AS run_id,
    CAST($created_at AS TIMESTAMP) AS created_at,
    f.fitted_edges
FROM customer_embeddings AS e
JOIN segment_bounds AS b
    ON (b.lower IS NULL OR e.embedding > b.lower)
    AND (b.upper IS NULL OR e.embedding <= b.upper)
LEFT JOIN fitted AS f ON e.customer_id = f.customer_id
