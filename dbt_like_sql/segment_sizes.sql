-- Size and like-rate of each current segment, for the UI and the output checks.
SELECT
    s.segment,
    count(DISTINCT s.customer_id) AS customers,
    count(e.item_id) AS edges,
    avg(CASE WHEN e.label = 1 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END)
        AS like_rate
FROM customer_segments AS s
LEFT JOIN preference_edges AS e USING (customer_id)
GROUP BY s.segment
ORDER BY s.segment
