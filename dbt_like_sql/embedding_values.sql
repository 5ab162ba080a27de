-- What step 3 needs of the embeddings, one row per DISTINCT value: how many customers
-- hold it and their likes and train edges summed. Exact 1-D k-means depends on nothing
-- else (core/value_segments.py), so only this table leaves the engine.
SELECT
    embedding,
    CAST(count(*) AS BIGINT) AS customers,
    CAST(sum(likes) AS BIGINT) AS likes,
    CAST(sum(degree) AS BIGINT) AS edges
FROM customer_embeddings
GROUP BY embedding
