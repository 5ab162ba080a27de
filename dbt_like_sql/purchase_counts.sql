-- The purchase matrix as a long table: how often each customer interacted with each item.
-- Binary outcomes (label rule 'positive': bought / clicked vs not) count only positive
-- values; ratings (label rule 'own_mean') count every rating as an interaction.
-- NMF works in memory: on the customers of edge_sample (all of them, or a seeded sample
-- of in_memory_customers when there are more).
SELECT
    customer_id,
    item_id,
    count(*) AS interactions
FROM raw_interactions
WHERE ($label_rule = 'own_mean' OR value > 0)
    AND customer_id IN (SELECT customer_id FROM edge_sample)
GROUP BY customer_id, item_id
