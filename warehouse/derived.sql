-- Views built on the table views; skipped while a table they read has no rows yet (any other
-- failure to bind fails the publish, naming the view).

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
