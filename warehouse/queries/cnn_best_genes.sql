-- The CNN's honest out-of-fold R² and r² per gene (BRCA, 1 Mb windows, all samples), best first,
-- with its spread over the outer folds and how long its training ran (cnn_training, per fold).
SELECT g.gene, g.chromosome, g.n_cpgs,
       round(g.r2, 3) AS r2, round(g.pearson_r2, 3) AS pearson_r2,
       round(min(f.r2), 3) AS worst_fold_r2, round(max(f.r2), 3) AS best_fold_r2,
       round(avg(t.epochs_run)) AS mean_epochs, round(avg(t.best_epoch)) AS mean_best_epoch
FROM gene_metrics g
JOIN fold_metrics f USING (cohort, chromosome, protocol, window_bp, tissue, model, gene)
JOIN cnn_training t USING (cohort, chromosome, protocol, window_bp, tissue, model, gene, fold)
WHERE g.cohort = 'BRCA' AND g.model = 'cnn' AND g.protocol = 'honest'
  AND g.window_bp = 1000000 AND g.tissue = 'all'
GROUP BY ALL
ORDER BY r2 DESC
LIMIT 10;
