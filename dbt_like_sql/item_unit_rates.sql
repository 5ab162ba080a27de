-- The pooled item rates the item-level segment models shrink toward
-- (core/segment_models.SegmentItemModel): from the TRAIN edges,
--   alpha_j = (likes_j + c alpha_pool) / (train_edges_j + c),  c = $pooled_strength,
-- alpha_pool the share of likes (both clipped into [1e-6, 1 - 1e-6] as core/pooled.EPS).
-- An item without train edges has no row: its rate is alpha_pool.
WITH train AS (
    SELECT
        item_id,
        CASE WHEN label = 1 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END AS liked
    FROM edge_split
    WHERE split = 'train'
),
pool AS (
    SELECT greatest(least(avg(liked), CAST(0.999999 AS DOUBLE)), CAST(0.000001 AS DOUBLE))
        AS alpha_pool
    FROM train
)
SELECT
    t.item_id,
    greatest(least(
        (sum(t.liked) + $pooled_strength * max(p.alpha_pool)) / (count(*) + $pooled_strength),
        CAST(0.999999 AS DOUBLE)), CAST(0.000001 AS DOUBLE)) AS item_rate,
    max(p.alpha_pool) AS alpha_pool
FROM train AS t
CROSS JOIN pool AS p
GROUP BY t.item_id
