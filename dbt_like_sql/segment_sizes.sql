-- Size and like-rate of each current segment, for the UI and the output checks.
CREATE OR REPLACE TABLE segment_sizes AS
SELECT
    s.segment,
    count(DISTINCT s.customer_id) AS customers,
    count(e.item_id) AS edges,
    avg(CASE WHEN e.label = 1 THEN 1.0 ELSE 0.0 END) AS like_rate
FROM customer_segments AS s
LEFT JOIN preference_edges AS e USING (customer_id)
GROUP BY s.segment
ORDER BY s.segment;
