-- Every customer's segment under the vector embedding: their cluster (vector_clusters)
-- through the cluster -> segment map (cluster_segments: small clusters folded, segments
-- numbered by like-rate and matched to stable ids by assets/segments.py), in the
-- columns of customer_segments (embedding: the first principal coordinate), with the
-- run that segmented them and each customer's number of preference edges at the time.
WITH fitted AS (
    SELECT customer_id, CAST(count(*) AS BIGINT) AS fitted_edges
    FROM preference_edges
    GROUP BY customer_id
)
SELECT
    c.customer_id,
    m.segment,
    c.e0 AS embedding,
    CAST($run_id AS VARCHAR) AS run_id,
    CAST($created_at AS TIMESTAMP) AS created_at,
    f.fitted_edges
FROM vector_clusters AS c
JOIN cluster_segments AS m ON c.cluster = m.cluster
LEFT JOIN fitted AS f ON c.customer_id = f.customer_id
