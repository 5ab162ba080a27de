-- Every method's scores in one table: one row per (dataset, task, slice, method, metric).
-- Each scoring asset writes its own score table through segmentation_dagster.scores
-- (method_scores_<method>, segment_classifier_scores, cold_start_scores, ...), which
-- lists it in score_tables; the asset passes that list as $score_tables, so the
-- comparison holds whatever methods have been materialized. union_tables is the
-- engine's macro: the named columns of each listed table, stacked.
SELECT dataset, task, slice, method, metric, value, n_segments, seconds
FROM union_tables(
    $score_tables, dataset, task, slice, method, metric, value, n_segments, seconds
)
ORDER BY task, slice, metric, method
