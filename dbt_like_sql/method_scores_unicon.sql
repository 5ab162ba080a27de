-- UNICON's rows for model_comparison (with its baselines): next-item ranking, segment
-- recovery and coherence, segment-aware recommendation, lookalike audiences.
-- union_tables is the engine's macro: the named columns of each table, stacked.
SELECT dataset, task, slice, method, metric, value, n_segments, seconds
FROM union_tables(
    ['unicon_next_item_scores', 'unicon_segment_scores', 'unicon_lookalike_scores'],
    dataset, task, slice, method, metric, value, n_segments, seconds
)
ORDER BY task, slice, metric, method
