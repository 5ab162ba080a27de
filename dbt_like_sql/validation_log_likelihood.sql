-- The chosen segmentation scored on EVERY customer's validation edges: per customer the
-- sum of log P(label) over their validation edges under their segment's model, the
-- scale k_selection chose on (a sample, in memory; core.selection.SCALE). The segment
-- model is the one customer_segments fitted on the train edges:
--   item    (core/segment_models.SegmentItemModel) the rate of segment_item_rates for an
--           observed (segment, item) pair, else its prior
--           sigma(logit(alpha_j) + logit(alpha_k) - logit(alpha_pool));
--   global  (SegmentGlobalModel) (likes_k + s) / (edges_k + 2 s), s = $strength.
-- Probabilities are clipped into [1e-6, 1 - 1e-6] as core/pooled.EPS.
WITH pool AS (
    SELECT max(alpha_pool) AS alpha_pool FROM item_unit_rates
),
held_out AS (
    SELECT
        v.customer_id,
        v.label,
        CASE
            WHEN $segment_model = 'global'
                THEN (g.likes + $strength) / (g.train_edges + CAST(2 AS DOUBLE) * $strength)
            WHEN r.rate IS NOT NULL THEN r.rate
            ELSE CAST(1 AS DOUBLE) / (CAST(1 AS DOUBLE) + exp(-(
                ln(coalesce(i.item_rate, p.alpha_pool)
                    / (CAST(1 AS DOUBLE) - coalesce(i.item_rate, p.alpha_pool)))
                + ln(g.alpha / (CAST(1 AS DOUBLE) - g.alpha))
                - ln(p.alpha_pool / (CAST(1 AS DOUBLE) - p.alpha_pool)))))
        END AS raw_p
    FROM edge_split AS v
    JOIN customer_segments AS c ON v.customer_id = c.customer_id
    JOIN segment_summaries AS g ON c.segment = g.segment
    CROSS JOIN pool AS p
    LEFT JOIN item_unit_rates AS i ON v.item_id = i.item_id
    LEFT JOIN segment_item_rates AS r ON c.segment = r.segment AND v.item_id = r.item_id
    WHERE v.split = 'validation'
),
clipped AS (
    SELECT
        customer_id,
        label,
        greatest(least(raw_p, CAST(0.999999 AS DOUBLE)), CAST(0.000001 AS DOUBLE)) AS p
    FROM held_out
)
SELECT
    customer_id,
    CAST(count(*) AS BIGINT) AS validation_edges,
    sum(CASE WHEN label = 1 THEN ln(p) ELSE ln(CAST(1 AS DOUBLE) - p) END) AS log_likelihood
FROM clipped
GROUP BY customer_id
