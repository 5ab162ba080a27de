-- Algorithm 4, step 5 at scale: every customer's vector embedding by ridge regression on
-- the FIXED category factors Y that core/vector_scale.SampledLowRankEmbedding fitted on
-- the sample (category_factors: y0..y2 per category), in its principal axes
-- (vector_axes: one row, t<a><k> = T[a, k]):
--   u_i = (sum_{b observed} y_b y_b^T + lambda I)^-1 sum_{b observed} v_ib y_b,
--   e_i = u_i T,  lambda = $regularisation,
-- the same ridge as core/embedding._ridge_rows (core/vector_scale.ridge_coordinates).
-- The 3 x 3 system is solved in closed form (adjugate over determinant); a rank below 3
-- has zero factors beyond it, which the ridge decouples exactly (their u is 0). A
-- category the sample never saw has no factors and adds nothing, as an unobserved one.
WITH cells AS (
    SELECT
        e.customer_id,
        e.value,
        e.edges,
        e.likes,
        coalesce(f.y0, CAST(0 AS DOUBLE)) AS y0,
        coalesce(f.y1, CAST(0 AS DOUBLE)) AS y1,
        coalesce(f.y2, CAST(0 AS DOUBLE)) AS y2
    FROM category_embeddings AS e
    LEFT JOIN category_factors AS f ON e.category = f.category
),
sums AS (
    SELECT
        customer_id,
        sum(y0 * y0) + $regularisation AS g00,
        sum(y0 * y1) AS g01,
        sum(y0 * y2) AS g02,
        sum(y1 * y1) + $regularisation AS g11,
        sum(y1 * y2) AS g12,
        sum(y2 * y2) + $regularisation AS g22,
        sum(value * y0) AS b0,
        sum(value * y1) AS b1,
        sum(value * y2) AS b2,
        CAST(sum(edges) AS BIGINT) AS degree,
        CAST(sum(likes) AS BIGINT) AS likes
    FROM cells
    GROUP BY customer_id
),
adjugate AS (
    SELECT
        *,
        g11 * g22 - g12 * g12 AS a00,
        g02 * g12 - g01 * g22 AS a01,
        g01 * g12 - g02 * g11 AS a02,
        g00 * g22 - g02 * g02 AS a11,
        g01 * g02 - g00 * g12 AS a12,
        g00 * g11 - g01 * g01 AS a22
    FROM sums
),
solved AS (
    SELECT
        customer_id,
        degree,
        likes,
        (a00 * b0 + a01 * b1 + a02 * b2) / (g00 * a00 + g01 * a01 + g02 * a02) AS u0,
        (a01 * b0 + a11 * b1 + a12 * b2) / (g00 * a00 + g01 * a01 + g02 * a02) AS u1,
        (a02 * b0 + a12 * b1 + a22 * b2) / (g00 * a00 + g01 * a01 + g02 * a02) AS u2
    FROM adjugate
)
SELECT
    s.customer_id,
    s.u0 * t.t00 + s.u1 * t.t10 + s.u2 * t.t20 AS e0,
    s.u0 * t.t01 + s.u1 * t.t11 + s.u2 * t.t21 AS e1,
    s.u0 * t.t02 + s.u1 * t.t12 + s.u2 * t.t22 AS e2,
    s.degree,
    s.likes
FROM solved AS s
CROSS JOIN vector_axes AS t
