-- The edges of the customers the in-memory methods work on: every customer when there
-- are at most $sample_customers, else a seeded sample of that many (by the md5 of the
-- customer id and the seed: the same customers on DuckDB and Spark, run after run).
-- The engine keeps every edge (edge_split); the choice of the segmentation, the
-- baselines, NMF, the classifiers and the profiles read this table.
WITH customers AS (
    SELECT DISTINCT customer_id FROM edge_split
),
ranked AS (
    SELECT
        customer_id,
        row_number() OVER (
            ORDER BY md5(concat(CAST(customer_id AS VARCHAR), '|', CAST($seed AS VARCHAR))),
                customer_id
        ) AS draw
    FROM customers
)
SELECT s.customer_id, s.item_id, s.label, s.split
FROM edge_split AS s
JOIN ranked AS r ON s.customer_id = r.customer_id
WHERE r.draw <= $sample_customers
