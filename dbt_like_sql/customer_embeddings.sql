-- Step 2 at scale: each customer's normalised negative log-likelihood of their TRAIN
-- edges under the pooled model (pooled_item_terms), as core/embedding.embed:
--   entropy (Alg. 3)  v_i = sum_j -log f(x_ij) / sum_j H(p_j);
--   degree  (Alg. 2)  v_i = sum_j -log f(x_ij) / d_i;
-- with the customer's train degree and likes, which the segments' like-rates sum.
WITH terms AS (
    SELECT
        s.customer_id,
        CASE WHEN s.label = 1 THEN t.like_nll ELSE t.dislike_nll END AS nll,
        t.entropy,
        CASE WHEN s.label = 1 THEN 1 ELSE 0 END AS liked
    FROM edge_split AS s
    JOIN pooled_item_terms AS t ON s.item_id = t.item_id
    WHERE s.split = 'train'
)
SELECT
    customer_id,
    CASE
        WHEN $normalisation = 'degree' THEN sum(nll) / count(*)
        ELSE sum(nll) / sum(entropy)
    END AS embedding,
    CAST(count(*) AS BIGINT) AS degree,
    CAST(sum(liked) AS BIGINT) AS likes
FROM terms
GROUP BY customer_id
