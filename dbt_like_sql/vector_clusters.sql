-- Step 3 of the vector embedding at scale: every customer's nearest k-means centre
-- (vector_centres: cluster, c0..c2, from scikit-learn or Spark MLlib on the engine's
-- coordinates), by squared distance as SegmentClusterer.predict; a tie goes to the
-- lower cluster. Only the K centres came from outside the engine.
WITH distances AS (
    SELECT
        v.customer_id,
        k.cluster,
        (v.e0 - k.c0) * (v.e0 - k.c0) + (v.e1 - k.c1) * (v.e1 - k.c1)
            + (v.e2 - k.c2) * (v.e2 - k.c2) AS distance
    FROM vector_coordinates AS v
    CROSS JOIN vector_centres AS k
),
ranked AS (
    SELECT
        customer_id,
        cluster,
        row_number() OVER (PARTITION BY customer_id ORDER BY distance, cluster) AS nearest
    FROM distances
)
SELECT
    v.customer_id,
    CAST(r.cluster AS BIGINT) AS cluster,
    v.e0,
    v.e1,
    v.e2,
    v.degree,
    v.likes
FROM ranked AS r
JOIN vector_coordinates AS v ON r.customer_id = v.customer_id
WHERE r.nearest = 1
