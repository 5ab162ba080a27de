-- UNICON's rows for model_comparison (with its baselines): next-item ranking, segment
-- recovery and coherence, segment-aware recommendation, lookalike audiences.
CREATE OR REPLACE TABLE method_scores_unicon AS
SELECT dataset, task, slice, method, metric, value, n_segments, seconds
FROM (
    SELECT * FROM unicon_next_item_scores
    UNION ALL BY NAME SELECT * FROM unicon_segment_scores
    UNION ALL BY NAME SELECT * FROM unicon_lookalike_scores
)
ORDER BY task, slice, metric, method;
