-- Every method's scores in one table: one row per (dataset, task, slice, method, metric).
-- Each method asset writes its own method_scores_<method> table; this model unions them.
CREATE OR REPLACE TABLE model_comparison AS
SELECT dataset, task, slice, method, metric, value, n_segments, seconds
FROM (
    SELECT * FROM method_scores_model_embedding
    UNION ALL BY NAME SELECT * FROM method_scores_population
    UNION ALL BY NAME SELECT * FROM method_scores_latent_class
    UNION ALL BY NAME SELECT * FROM method_scores_empirical_bayes
    UNION ALL BY NAME SELECT * FROM method_scores_demographic
    UNION ALL BY NAME SELECT * FROM method_scores_kmedoids
    UNION ALL BY NAME SELECT * FROM method_scores_spectral
    UNION ALL BY NAME SELECT * FROM method_scores_nmf
    UNION ALL BY NAME SELECT * FROM method_scores_nmf_recommendation
    UNION ALL BY NAME SELECT * FROM method_scores_unicon
    UNION ALL BY NAME SELECT * FROM segment_classifier_scores
    UNION ALL BY NAME SELECT * FROM cold_start_scores
)
ORDER BY task, slice, metric, method;
