-- Step 4 at scale: the item-level segment model (core/segment_models.SegmentItemModel)
-- on every observed (segment, item) pair of the TRAIN edges:
--   rate_kj = (likes_kj + s prior_kj) / (edges_kj + s),  s = $strength,
--   prior_kj = sigma(logit(alpha_j) + logit(alpha_k) - logit(alpha_pool)),
-- alpha_j and alpha_pool from item_unit_rates, alpha_k from segment_summaries; any pair
-- not listed is its prior (validation_log_likelihood.sql).
WITH pairs AS (
    SELECT
        c.segment,
        s.item_id,
        CAST(count(*) AS BIGINT) AS edges,
        sum(CASE WHEN s.label = 1 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END) AS likes
    FROM edge_split AS s
    JOIN customer_segments AS c ON s.customer_id = c.customer_id
    WHERE s.split = 'train'
    GROUP BY c.segment, s.item_id
),
priors AS (
    SELECT
        pr.segment,
        pr.item_id,
        pr.edges,
        pr.likes,
        CAST(1 AS DOUBLE) / (CAST(1 AS DOUBLE) + exp(-(
            ln(i.item_rate / (CAST(1 AS DOUBLE) - i.item_rate))
            + ln(g.alpha / (CAST(1 AS DOUBLE) - g.alpha))
            - ln(i.alpha_pool / (CAST(1 AS DOUBLE) - i.alpha_pool))
        ))) AS prior
    FROM pairs AS pr
    JOIN item_unit_rates AS i ON pr.item_id = i.item_id
    JOIN segment_summaries AS g ON pr.segment = g.segment
)
SELECT
    segment,
    item_id,
    edges,
    likes,
    greatest(least((likes + $strength * prior) / (edges + $strength),
        CAST(0.999999 AS DOUBLE)), CAST(0.000001 AS DOUBLE)) AS rate
FROM priors
