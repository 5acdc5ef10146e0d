-- Views built on the table views; skipped while a table they read has no rows yet.

-- Number of CpGs per gene and window: "how many CpGs does gene X have within 1 Mb".
CREATE OR REPLACE VIEW gene_window_sizes AS
SELECT cohort, gene, window_bp, count(*) AS n_cpgs
FROM gene_windows
GROUP BY ALL;

-- One line per cohort: what the data layer holds.
CREATE OR REPLACE VIEW cohort_overview AS
SELECT s.cohort,
       count(*) FILTER (WHERE s.kept) AS samples,
       count(*) FILTER (WHERE s.kept AND s.tissue = 'tumour') AS tumour,
       count(*) FILTER (WHERE s.kept AND s.tissue = 'normal') AS normal,
       (SELECT count(*) FROM gene_promoters g WHERE g.cohort = s.cohort) AS genes
FROM samples s
GROUP BY s.cohort;

-- gene_metrics: every model's per-gene R² and r², the CNN's included, so a comparison is one
-- GROUP BY. The CNN trained with its last epoch's weights kept is the model 'cnn_last_epoch'.
-- Defined three times: whichever tables exist, the last definition that binds stays.
CREATE OR REPLACE VIEW gene_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2,
       pearson_r2, mean_fold_r2, mean_fold_pearson_r2, seconds, run_id, trained_at
FROM model_gene_metrics;

CREATE OR REPLACE VIEW gene_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, n_cpgs,
       n_samples, r2, pearson_r2, mean_fold_r2, mean_fold_pearson_r2, seconds, run_id, trained_at
FROM cnn_gene_metrics;

CREATE OR REPLACE VIEW gene_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, n_cpgs,
       n_samples, r2, pearson_r2, mean_fold_r2, mean_fold_pearson_r2, seconds, run_id, trained_at
FROM cnn_gene_metrics
UNION ALL
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2,
       pearson_r2, mean_fold_r2, mean_fold_pearson_r2, seconds, run_id, trained_at
FROM model_gene_metrics;

-- fold_metrics and predictions: the same union for per-fold scores and out-of-fold predictions
-- (every model on the same outer folds: join on cohort, protocol, window_bp, tissue, gene, sample).
CREATE OR REPLACE VIEW fold_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, fold, n_train, n_test, r2,
       pearson_r2, run_id
FROM model_fold_metrics;

CREATE OR REPLACE VIEW fold_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, fold,
       n_train + n_valid AS n_train, n_test, r2, pearson_r2, run_id
FROM cnn_fold_metrics;

CREATE OR REPLACE VIEW fold_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, fold,
       n_train + n_valid AS n_train, n_test, r2, pearson_r2, run_id
FROM cnn_fold_metrics
UNION ALL
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, fold, n_train, n_test, r2,
       pearson_r2, run_id
FROM model_fold_metrics;

CREATE OR REPLACE VIEW predictions AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, sample, fold, y_true, y_pred,
       run_id
FROM model_predictions;

CREATE OR REPLACE VIEW predictions AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, sample, fold,
       y_true, y_pred, run_id
FROM cnn_predictions;

CREATE OR REPLACE VIEW predictions AS
SELECT cohort, chromosome, protocol, window_bp, tissue,
       CASE weights WHEN 'best' THEN 'cnn' ELSE 'cnn_last_epoch' END AS model, gene, sample, fold,
       y_true, y_pred, run_id
FROM cnn_predictions
UNION ALL
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, sample, fold, y_true, y_pred,
       run_id
FROM model_predictions;

-- Per cohort, protocol, window, tissue and model: genes, mean and median R² and r².
CREATE OR REPLACE VIEW model_summary AS
SELECT cohort, protocol, window_bp, tissue, model, count(*) AS genes,
       avg(r2) AS mean_r2, median(r2) AS median_r2,
       avg(pearson_r2) AS mean_pearson_r2, median(pearson_r2) AS median_pearson_r2
FROM gene_metrics
GROUP BY ALL;

-- r2_by_tissue: per model, the genes scored in every tissue the experiment ran, so the tissues
-- are compared on the same genes: genes, median samples, mean and median R² and r².
CREATE OR REPLACE VIEW r2_by_tissue AS
WITH runs AS (
    SELECT cohort, protocol, window_bp, model, count(DISTINCT tissue) AS tissues
    FROM tissue_experiment GROUP BY ALL),
complete AS (
    SELECT cohort, protocol, window_bp, model, gene
    FROM tissue_experiment JOIN runs USING (cohort, protocol, window_bp, model)
    GROUP BY ALL HAVING count(DISTINCT tissue) = any_value(tissues))
SELECT cohort, protocol, window_bp, model, tissue, count(*) AS genes,
       median(n_samples) AS median_n_samples, avg(r2) AS mean_r2, median(r2) AS median_r2,
       avg(pearson_r2) AS mean_pearson_r2, median(pearson_r2) AS median_pearson_r2
FROM tissue_experiment JOIN complete USING (cohort, protocol, window_bp, model, gene)
GROUP BY ALL;

-- r2_by_window: per model and window size, over the genes present in every window.
CREATE OR REPLACE VIEW r2_by_window AS
SELECT cohort, protocol, tissue, model, window_bp, count(*) AS genes,
       median(n_cpgs) AS median_n_cpgs, avg(r2) AS mean_r2, median(r2) AS median_r2,
       avg(pearson_r2) AS mean_pearson_r2, median(pearson_r2) AS median_pearson_r2
FROM window_experiment
GROUP BY ALL;

-- generalisation_summary: per source and target cohort and model, over the genes scored.
CREATE OR REPLACE VIEW generalisation_summary AS
SELECT source_cohort, target_cohort, protocol, window_bp, model, count(*) AS genes,
       avg(r2) AS mean_r2, median(r2) AS median_r2, avg(pearson_r2) AS mean_pearson_r2,
       median(pearson_r2) AS median_pearson_r2, avg(coverage) AS mean_coverage
FROM generalisation
GROUP BY ALL;
