-- Step 1 at scale: the pooled model fitted to every customer's TRAIN edges, as one row
-- per item with its like-probability p_like and the terms the embedding sums:
-- -log p_like (a like), -log(1 - p_like) (a dislike) and the entropy H(p_like), in nats.
-- The same numbers as core/pooled.py (tests/engine: relative 1e-9):
--   global           p = alpha_pool, the share of likes among train edges;
--   item             p_j = (likes_j + s alpha_pool) / (train_edges_j + s), s = $prior_strength;
--   category:global  p = the category's like share (alpha_pool where it has one label only);
--   category:item    p_j = (likes_j + s alpha_b) / (train_edges_j + s), alpha_b the category's.
-- Every item of edge_split gets a row (an item seen only in held-out edges has 0 train
-- edges); p is clipped into [1e-6, 1 - 1e-6] as core/pooled.EPS.
WITH items AS (
    SELECT item_id, min(coalesce(CAST(category AS VARCHAR), 'unknown')) AS category
    FROM raw_items
    GROUP BY item_id
),
edges AS (
    SELECT
        s.item_id,
        coalesce(i.category, 'unknown') AS category,
        CASE WHEN s.split = 'train' THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END AS train,
        CASE WHEN s.split = 'train' AND s.label = 1 THEN CAST(1 AS DOUBLE)
            ELSE CAST(0 AS DOUBLE) END AS liked
    FROM edge_split AS s
    LEFT JOIN items AS i ON s.item_id = i.item_id
),
pool AS (
    SELECT sum(liked) / sum(train) AS alpha_pool FROM edges
),
by_category AS (
    SELECT
        category,
        sum(liked) / sum(train) AS category_rate,
        sum(liked) > 0 AND sum(liked) < sum(train) AS mixed
    FROM edges
    WHERE train > 0
    GROUP BY category
),
by_item AS (
    SELECT item_id, category, sum(train) AS train_edges, sum(liked) AS likes
    FROM edges
    GROUP BY item_id, category
),
predicted AS (
    SELECT
        b.item_id,
        b.category,
        b.train_edges,
        b.likes,
        p.alpha_pool,
        CASE
            WHEN $pooled = 'global' THEN p.alpha_pool
            WHEN $pooled = 'item'
                THEN (b.likes + $prior_strength * p.alpha_pool) / (b.train_edges + $prior_strength)
            WHEN NOT coalesce(c.mixed, false) THEN p.alpha_pool
            WHEN $pooled = 'category:global' THEN c.category_rate
            ELSE (b.likes + $prior_strength * c.category_rate) / (b.train_edges + $prior_strength)
        END AS raw_p
    FROM by_item AS b
    CROSS JOIN pool AS p
    LEFT JOIN by_category AS c ON b.category = c.category
),
clipped AS (
    SELECT
        *,
        greatest(least(raw_p, CAST(1 AS DOUBLE) - CAST(0.000001 AS DOUBLE)),
            CAST(0.000001 AS DOUBLE)) AS p_like
    FROM predicted
)
SELECT
    item_id,
    category,
    CAST(train_edges AS BIGINT) AS train_edges,
    CAST(likes AS BIGINT) AS likes,
    alpha_pool,
    p_like,
    -ln(p_like) AS like_nll,
    -ln(CAST(1 AS DOUBLE) - p_like) AS dislike_nll,
    -(p_like * ln(p_like) + (CAST(1 AS DOUBLE) - p_like) * ln(CAST(1 AS DOUBLE) - p_like))
        AS entropy
FROM clipped
