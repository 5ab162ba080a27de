-- Each segment's TRAIN edges and likes, and its like-rate with one pseudo-count per
-- label, alpha_k = (likes_k + 1) / (edges_k + 2) (core/segment_models: the offset of the
-- item-level segment model; one rate per segment is (likes_k + s) / (edges_k + 2 s)).
SELECT
    c.segment,
    CAST(count(*) AS BIGINT) AS train_edges,
    CAST(sum(CASE WHEN s.label = 1 THEN 1 ELSE 0 END) AS BIGINT) AS likes,
    (sum(CASE WHEN s.label = 1 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END)
        + CAST(1 AS DOUBLE)) / (count(*) + CAST(2 AS DOUBLE)) AS alpha
FROM edge_split AS s
JOIN customer_segments AS c ON s.customer_id = c.customer_id
WHERE s.split = 'train'
GROUP BY c.segment
