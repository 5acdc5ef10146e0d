-- The CNN's mean R² by the number of CpGs in the window (quartiles), per cohort, protocol and
-- window, on all samples (r2_by_cpg_count has every model by the paper's bins).
SELECT cohort, protocol, window_bp, cpg_quartile, count(*) AS genes,
       min(n_cpgs) AS min_cpgs, max(n_cpgs) AS max_cpgs, round(avg(r2), 3) AS mean_r2
FROM (
    SELECT *, ntile(4) OVER (PARTITION BY cohort, protocol, window_bp ORDER BY n_cpgs)
              AS cpg_quartile
    FROM gene_metrics
    WHERE model = 'cnn' AND tissue = 'all'
)
GROUP BY ALL
ORDER BY ALL;
