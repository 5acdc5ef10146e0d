-- How many CpGs does each gene have within each window? (here: TP53-like question for every gene)
SELECT cohort, window_bp, count(*) AS genes, min(n_cpgs) AS min_cpgs,
       median(n_cpgs) AS median_cpgs, max(n_cpgs) AS max_cpgs
FROM gene_window_sizes
GROUP BY ALL
ORDER BY cohort, window_bp;
