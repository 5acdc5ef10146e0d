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
