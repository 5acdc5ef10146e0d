-- Honest out-of-fold R² and r² per gene (BRCA, 1 Mb windows), best first, with fold spread.
SELECT g.gene, g.chromosome, g.n_cpgs,
       round(g.r2, 3) AS r2, round(g.pearson_r2, 3) AS pearson_r2,
       round(min(f.r2), 3) AS worst_fold_r2, round(max(f.r2), 3) AS best_fold_r2,
       round(avg(f.epochs_run)) AS mean_epochs
FROM cnn_gene_metrics g
JOIN cnn_fold_metrics f USING (cohort, chromosome, protocol, window_bp, gene)
WHERE g.cohort = 'BRCA' AND g.protocol = 'honest' AND g.window_bp = 1000000
GROUP BY ALL
ORDER BY r2 DESC
LIMIT 10;
