-- Algorithm 4, step 3 at scale: each customer's normalised negative log-likelihood of
-- their TRAIN edges in each category, under the pooled model (pooled_item_terms, any of
-- its classes; per category for category:global / category:item), in LONG format: one
-- row per (customer, category) the customer has a train edge in, as the non-NaN entries
-- of core/embedding.embed_by_category:
--   entropy (Alg. 3)  v_ib = sum_{j in b} -log f(x_ij) / sum_{j in b} H(p_j);
--   degree  (Alg. 2)  v_ib = sum_{j in b} -log f(x_ij) / d_ib;
-- with the cell's train edges and likes (the segments' like-rates sum them).
WITH terms AS (
    SELECT
        s.customer_id,
        t.category,
        CASE WHEN s.label = 1 THEN t.like_nll ELSE t.dislike_nll END AS nll,
        t.entropy,
        CASE WHEN s.label = 1 THEN 1 ELSE 0 END AS liked
    FROM edge_split AS s
    JOIN pooled_item_terms AS t ON s.item_id = t.item_id
    WHERE s.split = 'train'
)
SELECT
    customer_id,
    category,
    CASE
        WHEN $normalisation = 'degree' THEN sum(nll) / count(*)
        ELSE sum(nll) / sum(entropy)
    END AS value,
    CAST(count(*) AS BIGINT) AS edges,
    CAST(sum(liked) AS BIGINT) AS likes
FROM terms
GROUP BY customer_id, category
