-- The purchase matrix as a long table: how often each customer interacted with each item.
-- Binary outcomes (label rule 'positive': bought / clicked vs not) count only positive
-- values; ratings (label rule 'own_mean') count every rating as an interaction.
CREATE OR REPLACE TABLE purchase_counts AS
SELECT
    customer_id,
    item_id,
    count(*) AS interactions
FROM raw_interactions
WHERE $label_rule = 'own_mean' OR value > 0
GROUP BY customer_id, item_id;
