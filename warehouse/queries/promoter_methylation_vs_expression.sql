-- Correlation of promoter M-values with expression, per gene (BRCA): mostly negative.
WITH promoter_m AS (
    SELECT w.cohort, w.gene, m.sample, avg(m.m_value) AS promoter_m
    FROM gene_windows w
    JOIN m_values m USING (cohort, chromosome, probe_id)
    WHERE w.window_bp = 1000 AND w.cohort = 'BRCA'
    GROUP BY ALL
)
SELECT p.gene, count(*) AS samples, round(corr(p.promoter_m, e.log2_expression), 3) AS r
FROM promoter_m p
JOIN expression e USING (cohort, gene, sample)
GROUP BY p.gene
ORDER BY r
LIMIT 10;
